"""Backends against the float64 reference: the error of each one's generator output, per input size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch
from torch import nn

# Max abs error of the generator output (in [0, 1]) against float64, per dtype: float32
# keeps it far below one 8-bit level (1/255 = 3.9e-3); bfloat16 keeps 8 mantissa bits.
PARITY_TOLERANCE = {torch.float32: 2e-4, torch.bfloat16: 1e-2, torch.float64: 1e-10}
# The tolerance of a dtype without its own.
DEFAULT_TOLERANCE = 2e-4


@dataclass(frozen=True)
class ParityRow:
    """One backend at one size: its error against the float64 reference, and the tolerance it is held to."""

    backend: str
    size: int
    dtype: torch.dtype
    max_abs_err: float
    mean_abs_err: float
    output_std: float  # of the reference output: how much there is to get wrong
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_err <= self.tolerance


def tolerance_for(dtype: torch.dtype) -> float:
    """The largest max abs error PARITY_TOLERANCE allows a backend computing in ``dtype``."""
    return PARITY_TOLERANCE.get(dtype, DEFAULT_TOLERANCE)


def compare_backends(
    reference: nn.Module,
    backends: Sequence[str],
    device: str,
    dtype: torch.dtype,
    sizes: Sequence[int],
    seed: int = 0,
    tolerance: Optional[float] = None,
    progress: Optional[Callable[[str], None]] = None,
) -> List[ParityRow]:
    """Run ``reference`` (float32 reference weights) through each named backend in ``dtype`` and through the
    reference backend in float64, on the benchmark's seeded input at each size; one row per size and backend.

    ``tolerance`` defaults to ``tolerance_for(dtype)``; ``progress`` is told when each size starts."""
    from .backends import optimize
    from .benchmark import e2e_input

    if tolerance is None:
        tolerance = tolerance_for(dtype)
    reference64 = optimize(reference, backend="reference", device=device, dtype=torch.float64)
    modules = {name: optimize(reference, backend=name, device=device, dtype=dtype) for name in backends}
    rows = []
    for size in sizes:
        batch = e2e_input(size, seed).to(device)
        if progress is not None:
            progress(f"parity at {size}x{size}: float64 reference, then {', '.join(modules)}")
        with torch.no_grad():
            expected = reference64(batch.double())
            for name, module in modules.items():
                # A fast module with bfloat16 inside takes float32 in (its io_dtype).
                got = module(batch.to(getattr(module, "io_dtype", dtype))).double()
                err = (got - expected).abs()
                rows.append(ParityRow(name, size, dtype, err.max().item(), err.mean().item(),
                                      expected.std().item(), tolerance))
    return rows
