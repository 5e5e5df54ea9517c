"""Which implementation of the generator runs where, and why the others do not.

Each backend answers ``not_supported_reasons(device, dtype)``; ``auto`` takes
the first backend in priority order with no reasons.  A backend named
explicitly either works or raises with its reasons; only ``auto`` falls back.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

DeviceLike = Union[str, torch.device]


@dataclass(frozen=True)
class Backend:
    """One way of running the generator."""

    name: str
    description: str
    not_supported_reasons: Callable[[torch.device, torch.dtype], List[str]]
    # Turns a generator it may modify in place into the module that runs; optimize()
    # hands it a copy, load() the freshly read generator.
    prepare: Callable[[nn.Module, torch.device, torch.dtype], nn.Module]


def _reference_reasons(device: torch.device, dtype: torch.dtype) -> List[str]:
    reasons = []
    if dtype not in (torch.float32, torch.float64):
        reasons.append(
            f"the reference model runs in float32 or float64 only (torch.fft has no bfloat16, "
            f"and half precision only at power-of-two sizes on CUDA); got {dtype}"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        reasons.append("CUDA was requested but torch.cuda.is_available() is False")
    elif device.type not in ("cpu", "cuda"):
        reasons.append(f"device type {device.type!r} is not supported (cpu or cuda)")
    return reasons


def _reference_prepare(generator: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    module = generator.to(device=device, dtype=dtype).eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


# Priority order for "auto": fastest first.  Later work adds fused backends in front.
BACKENDS: Dict[str, Backend] = {
    "reference": Backend(
        "reference",
        "the unoptimised PyTorch reference model (eager, any device torch supports)",
        _reference_reasons,
        _reference_prepare,
    ),
}


def available_backends(device: DeviceLike = "cpu", dtype: torch.dtype = torch.float32) -> Dict[str, Optional[str]]:
    """Every backend with None if it can run on ``device`` in ``dtype``, else the reason it cannot."""
    device = torch.device(device)
    out: Dict[str, Optional[str]] = {}
    for name, backend in BACKENDS.items():
        reasons = backend.not_supported_reasons(device, dtype)
        out[name] = "; ".join(reasons) if reasons else None
    return out


def select_backend(name: str, device: DeviceLike, dtype: torch.dtype) -> Tuple[Backend, Dict[str, Optional[str]]]:
    """Resolve ``name`` ('auto' or a backend name) to a backend, with the reasons of every backend."""
    device = torch.device(device)
    reasons = available_backends(device, dtype)
    if name == "auto":
        for candidate, why in reasons.items():
            if why is None:
                return BACKENDS[candidate], reasons
        listing = "; ".join(f"{n}: {why}" for n, why in reasons.items())
        raise ValueError(f"no backend can run on {device} in {dtype}: {listing}")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known backends: auto, {', '.join(BACKENDS)}")
    if reasons[name] is not None:
        raise ValueError(f"backend {name!r} cannot run on {device} in {dtype}: {reasons[name]}")
    return BACKENDS[name], reasons


def _module_placement(module: nn.Module) -> Tuple[torch.device, torch.dtype]:
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def optimize(
    generator: nn.Module,
    backend: str = "auto",
    device: Optional[DeviceLike] = None,
    dtype: Optional[torch.dtype] = None,
) -> nn.Module:
    """A new module with the generator's outputs, run by ``backend``; the input module is not modified.

    Works on lama_fast's reference generator and on one built by the original
    ``saicinpainting`` code (same module names).  ``device`` and ``dtype``
    default to where the generator's weights are.
    """
    if not isinstance(generator, nn.Module):
        raise TypeError(f"optimize() takes a torch.nn.Module, got {type(generator).__name__}")
    here_device, here_dtype = _module_placement(generator)
    device = torch.device(device) if device is not None else here_device
    dtype = dtype if dtype is not None else here_dtype
    chosen, reasons = select_backend(backend, device, dtype)
    module = chosen.prepare(copy.deepcopy(generator), device, dtype)
    module.lama_fast_backend = chosen.name
    module.lama_fast_backend_reasons = reasons
    return module
