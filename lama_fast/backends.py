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
    # Turns a generator into the module that runs.  A backend that modifies the
    # generator it is given (modifies_input) gets a copy from optimize() and the
    # freshly read generator from load(); one that only reads it gets the original.
    prepare: Callable[[nn.Module, torch.device, torch.dtype], nn.Module]
    modifies_input: bool = True
    # Device types and dtypes for which "auto" may take this backend (it may run elsewhere when named).
    auto_device_types: Tuple[str, ...] = ("cpu", "cuda")
    auto_dtypes: Optional[Tuple[torch.dtype, ...]] = None  # None: every dtype it runs in

    def taken_by_auto(self, device: torch.device, dtype: torch.dtype) -> bool:
        return device.type in self.auto_device_types and (self.auto_dtypes is None or dtype in self.auto_dtypes)


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


def _triton_reasons(device: torch.device, dtype: torch.dtype) -> List[str]:
    from .gpu import triton_reasons

    return triton_reasons(device, dtype)


def _triton_prepare(generator: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    from .gpu import build_triton_generator

    return build_triton_generator(generator, device, dtype)


def _cuda_reasons(device: torch.device, dtype: torch.dtype) -> List[str]:
    from .gpu import cuda_reasons

    return cuda_reasons(device, dtype)


def _cuda_prepare(generator: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    from .gpu import build_cuda_generator

    return build_cuda_generator(generator, device, dtype)


def _cpu_reasons(device: torch.device, dtype: torch.dtype) -> List[str]:
    reasons = []
    if device.type != "cpu":
        reasons.append(f"the cpu backend runs on the CPU only, not on {device.type}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float64):
        reasons.append(f"the cpu backend runs in float32, bfloat16 or float64; got {dtype}")
    if dtype in (torch.float32, torch.bfloat16) and not torch.backends.mkldnn.is_available():
        reasons.append("this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)")
    if dtype == torch.bfloat16 and not _cpu_has_bf16():
        reasons.append("this CPU has no bfloat16 instructions (AVX512-BF16 or AMX), so bfloat16 would be slower")
    try:
        from .ops._extension import load_extension
    except ImportError as error:  # a broken install: the ops package itself is missing
        reasons.append(f"lama_fast.ops does not import ({error})")
    else:
        why = load_extension()
        if why is not None:
            reasons.append(why)
        elif not hasattr(torch.ops.lama_fast, "spectral_transform"):
            reasons.append("lama_fast._C was built without the spectral_transform op")
    return reasons


def _cpu_has_bf16() -> bool:
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is not None:
        try:
            return bool(check())
        except RuntimeError:
            return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            flags = info.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cpu_prepare(generator: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    from .fast import build_fast_generator

    return build_fast_generator(generator, dtype)


# Priority order for "auto": fastest first.
BACKENDS: Dict[str, Backend] = {
    "triton": Backend(
        "triton",
        "GPU generator: BatchNorm folded, cuDNN convolutions (channels last), the spectral transform as "
        "Triton kernels around cuFFT (float32, bfloat16, float16); on the CPU only under TRITON_INTERPRET=1",
        _triton_reasons,
        _triton_prepare,
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
        _cuda_reasons,
        _cuda_prepare,
        modifies_input=False,
        # Not yet timed on a GPU against triton and the reference: it runs when named.
        auto_device_types=(),
    ),
    "cpu": Backend(
        "cpu",
        "fused CPU generator: BatchNorm folded, oneDNN convolutions with prepacked weights, "
        "the C++ fused spectral transform (float32, bfloat16, float64)",
        _cpu_reasons,
        _cpu_prepare,
        modifies_input=False,
    ),
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
            if why is None and BACKENDS[candidate].taken_by_auto(device, dtype):
                return BACKENDS[candidate], reasons
        listing = "; ".join(
            f"{n}: {why if why is not None else f'auto does not take it on {device.type} in {dtype} (it runs when named)'}"
            for n, why in reasons.items())
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
    layers passes it to the next usable one, with the reason recorded.  Unless the caller
    ``owned`` the generator, a backend that modifies its input gets a copy."""
    from .fast.fold import UnsupportedModelError

    reasons = dict(reasons)
    names = list(BACKENDS)
    for name in names[names.index(chosen.name):]:
        if reasons.get(name) is not None:
            continue
        backend = BACKENDS[name]
        try:
            given = generator if owned or not backend.modifies_input else copy.deepcopy(generator)
            return backend.prepare(given, device, dtype), backend, reasons
        except UnsupportedModelError as error:
            if not fallback:
                raise UnsupportedModelError(f"backend {name!r} cannot run this generator: {error}") from None
            reasons[name] = f"this generator is not supported: {error}"
    listing = "; ".join(f"{n}: {why}" for n, why in reasons.items())
    raise ValueError(f"no backend can run this generator on {device} in {dtype}: {listing}")
