"""Which implementation of the generator runs where, and why the others do not.

Each backend (a module here: reference, cpu, triton, cuda) answers
``not_supported_reasons(device, dtype, model=None)`` and turns a generator into
the module that runs with ``prepare(generator, device, dtype)``.  ``auto`` takes
the first backend in priority order with no reasons that it may take on that
device and dtype.  A backend named explicitly either works or raises with its
reasons; only ``auto`` falls back, and only into backends it may take.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from . import cpu, cuda, reference, triton
from .cpu import cpu_has_bf16 as _cpu_has_bf16  # noqa: F401  (importable from here as before)

__all__ = ["BACKENDS", "Backend", "apply_cuda_graphs", "available_backends", "check_cuda_graphs", "optimize",
           "prepare_with_fallback", "select_backend"]

DeviceLike = Union[str, torch.device]


@dataclass(frozen=True)
class Backend:
    """One way of running the generator."""

    name: str
    description: str
    # (device, dtype, model=None) -> why it cannot run there (and that model, when given); empty when it can.
    not_supported_reasons: Callable[..., List[str]]
    # Turns a generator into the module that runs.  A backend that modifies the
    # generator it is given (modifies_input) gets a copy from optimize() and the
    # freshly read generator from load(); one that only reads it gets the original.
    prepare: Callable[[nn.Module, torch.device, torch.dtype], nn.Module]
    modifies_input: bool = True
    # Device types and dtypes for which "auto" may take this backend (it may run elsewhere when named).
    auto_device_types: Tuple[str, ...] = ("cpu", "cuda")
    auto_dtypes: Optional[Tuple[torch.dtype, ...]] = None  # None: every dtype it runs in

    def taken_by_auto(self, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether ``auto`` may take this backend on ``device`` in ``dtype``."""
        return device.type in self.auto_device_types and (self.auto_dtypes is None or dtype in self.auto_dtypes)


# Priority order for "auto": fastest first.
BACKENDS: Dict[str, Backend] = {
    "triton": Backend(
        "triton",
        "GPU generator: BatchNorm folded, cuDNN convolutions (channels last), the spectral transform as "
        "Triton kernels around cuFFT (float32, bfloat16, float16); on the CPU only under TRITON_INTERPRET=1",
        triton.not_supported_reasons,
        triton.prepare,
        modifies_input=False,
        # Under Triton's interpreter it runs on the CPU for tests, far too slowly for "auto" to take it.
        auto_device_types=("cuda",),
        # In float32 the reference is faster on an H100 at 1000x750 and above
        # (bench/results/gpu_notes.md), so auto takes this backend only where the
        # reference cannot run at all.
        auto_dtypes=(torch.bfloat16, torch.float16),
    ),
    "cuda": Backend(
        "cuda",
        "GPU generator as for triton, with the spectral transform as the compiled CUDA extension "
        "(cuFFT plans cached per shape, cuBLAS GEMMs, fused epilogue kernels; float32, bfloat16, float16)",
        cuda.not_supported_reasons,
        cuda.prepare,
        modifies_input=False,
        # Not yet timed on a GPU against triton and the reference: it runs when named.
        auto_device_types=(),
    ),
    "cpu": Backend(
        "cpu",
        "fused CPU generator: BatchNorm folded, oneDNN convolutions with prepacked weights, "
        "the C++ fused spectral transform (float32, bfloat16, float64)",
        cpu.not_supported_reasons,
        cpu.prepare,
        modifies_input=False,
    ),
    "reference": Backend(
        "reference",
        "the unoptimised PyTorch reference model (eager, any device torch supports)",
        reference.not_supported_reasons,
        reference.prepare,
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
            if why is None and BACKENDS[candidate].taken_by_auto(device, dtype):
                return BACKENDS[candidate], reasons
        raise ValueError(f"no backend can run on {device} in {dtype}: {_listing(reasons, device, dtype)}")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known backends: auto, {', '.join(BACKENDS)}")
    if reasons[name] is not None:
        raise ValueError(f"backend {name!r} cannot run on {device} in {dtype}: {reasons[name]}")
    return BACKENDS[name], reasons


def _listing(reasons: Dict[str, Optional[str]], device: torch.device, dtype: torch.dtype) -> str:
    """Every backend with why ``auto`` did not take it."""
    untaken = f"auto does not take it on {device.type} in {dtype} (it runs when named)"
    return "; ".join(f"{name}: {why if why is not None else untaken}" for name, why in reasons.items())


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
    cuda_graphs: Optional[bool] = None,
) -> nn.Module:
    """A new module with the generator's outputs, run by ``backend``; the input module is not modified.

    Works on lama_fast's reference generator and on one built by the original
    ``saicinpainting`` code (same module names).  ``device`` and ``dtype``
    default to where the generator's weights are.  ``cuda_graphs=True`` captures
    the forward as a CUDA graph per input shape (CUDA devices only; the triton and
    cuda backends do so by default), ``False`` runs it eagerly.
    """
    if not isinstance(generator, nn.Module):
        raise TypeError(f"optimize() takes a torch.nn.Module, got {type(generator).__name__}")
    here_device, here_dtype = _module_placement(generator)
    device = torch.device(device) if device is not None else here_device
    dtype = dtype if dtype is not None else here_dtype
    check_cuda_graphs(cuda_graphs, device)
    chosen, reasons = select_backend(backend, device, dtype)
    module, chosen, reasons = prepare_with_fallback(
        chosen, reasons, generator, device, dtype, fallback=backend == "auto", owned=False
    )
    module = apply_cuda_graphs(module, cuda_graphs)
    module.lama_fast_backend = chosen.name
    module.lama_fast_backend_reasons = reasons
    return module


def check_cuda_graphs(cuda_graphs: Optional[bool], device: torch.device) -> None:
    """Refuse a ``cuda_graphs`` request that cannot be honoured, before any work."""
    if cuda_graphs not in (None, True, False):
        raise TypeError(f"cuda_graphs must be None, True or False, got {cuda_graphs!r}")
    if cuda_graphs and torch.device(device).type != "cuda":
        raise ValueError(f"cuda_graphs=True needs a CUDA device, got {torch.device(device)}")


def apply_cuda_graphs(module: nn.Module, cuda_graphs: Optional[bool]) -> nn.Module:
    """Switch the module's CUDA graphs on or off (None: the backend's default).  A module
    without graphs of its own is wrapped in ``lama_fast.gpu.graphs.CudaGraphed``."""
    if cuda_graphs is None:
        return module
    if hasattr(module, "use_cuda_graphs"):
        module.use_cuda_graphs = cuda_graphs
        return module
    if not cuda_graphs:
        return module
    from .gpu.graphs import CudaGraphed

    return CudaGraphed(module)


def prepare_with_fallback(
    chosen: Backend,
    reasons: Dict[str, Optional[str]],
    generator: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    fallback: bool,
    owned: bool,
) -> Tuple[nn.Module, Backend, Dict[str, Optional[str]]]:
    """``chosen.prepare(generator)``; under ``auto``, a backend that cannot run this model's
    layers passes it to the next usable one that ``auto`` may take, with the reason recorded.
    Unless the caller ``owned`` the generator, a backend that modifies its input gets a copy."""
    from ..rewrite import UnsupportedModelError

    reasons = dict(reasons)
    names = list(BACKENDS)
    for name in names[names.index(chosen.name):]:
        backend = BACKENDS[name]
        if reasons.get(name) is not None or (backend is not chosen and not backend.taken_by_auto(device, dtype)):
            continue
        try:
            given = generator if owned or not backend.modifies_input else copy.deepcopy(generator)
            return backend.prepare(given, device, dtype), backend, reasons
        except UnsupportedModelError as error:
            if not fallback:
                raise UnsupportedModelError(f"backend {name!r} cannot run this generator: {error}") from None
            reasons[name] = f"this generator is not supported: {error}"
    raise ValueError(f"no backend can run this generator on {device} in {dtype}: {_listing(reasons, device, dtype)}")
