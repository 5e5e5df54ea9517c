"""The systems of the end-to-end suite: the reference eager or channels_last, the peers, and lama_fast's backends."""

from __future__ import annotations

import time
from typing import Union

import torch
from torch import nn

from .core import Unavailable, dtype_name
from .peers import Runner, compile_runner, onnxruntime_runner, openvino_runner
from .plan import E2E_SYSTEMS, OURS_SYSTEMS


def require_backend(backend: str, dtype: torch.dtype) -> None:
    """Raise Unavailable, saying why, unless lama_fast's ``backend`` runs on the CPU in ``dtype``."""
    from ..backends import BACKENDS

    if backend not in BACKENDS:
        raise Unavailable(f"lama_fast has no {backend!r} backend in this build (has: {', '.join(BACKENDS)})")
    reasons = BACKENDS[backend].not_supported_reasons(torch.device("cpu"), dtype)
    if reasons:
        raise Unavailable(f"backend {backend!r} in {dtype_name(dtype)}: {'; '.join(reasons)}")


def ours_module(module: nn.Module, dtype: torch.dtype, what: str, backend: str = "cpu") -> nn.Module:
    """``lama_fast.optimize(module, backend)`` on the CPU, or Unavailable saying why not."""
    from ..backends import optimize

    require_backend(backend, dtype)
    try:
        return optimize(module, backend=backend, device="cpu", dtype=dtype)
    except Exception as exc:
        raise Unavailable(f"lama_fast.optimize(backend={backend!r}) does not take {what} "
                          f"({type(exc).__name__}: {exc})") from None


def system_dtype(system: str, dtype: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype a system computes in (``dtype`` is what ``backend:NAME`` systems use)."""
    if system.endswith("-bf16"):
        return torch.bfloat16
    if system.startswith("backend:"):
        return dtype
    return torch.float32


def build_e2e_system(system: str, generator: nn.Module, x: torch.Tensor, dtype: torch.dtype = torch.float32,
                     device: Union[str, torch.device] = "cpu") -> Runner:
    """Build ``system`` around the float32 reference ``generator`` for input ``x`` (may modify the generator)."""
    if system == "eager":
        return Runner(lambda: generator(x))
    if system == "channels_last":
        start = time.perf_counter()
        converted = generator.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        return Runner(lambda: converted(x_cl), time.perf_counter() - start)
    if system == "compile":
        return compile_runner(generator, x)
    if system in ("openvino-f32", "openvino-bf16"):
        return openvino_runner(generator, x, "bf16" if system.endswith("bf16") else "f32")
    if system == "onnxruntime":
        return onnxruntime_runner(generator, x)
    if system in OURS_SYSTEMS or system.startswith("backend:"):
        backend = "cpu" if system in OURS_SYSTEMS else system.split(":", 1)[1]
        dtype = system_dtype(system, dtype)
        start = time.perf_counter()
        if system in OURS_SYSTEMS:
            module = ours_module(generator, dtype, "the generator", backend)
        else:
            from ..backends import optimize

            module = optimize(generator, backend=backend, device=device, dtype=dtype)
        build_s = time.perf_counter() - start
        # Our fast modules take the reference's float32 input whatever they compute in (the cast is
        # theirs, and timed); other backends get the input in their dtype.
        x_in = x.to(device=device, dtype=torch.float32 if system in OURS_SYSTEMS else dtype)
        return Runner(lambda: module(x_in), build_s, f"lama_fast.optimize(backend={backend!r})")
    raise ValueError(f"unknown end-to-end system {system!r}; known: {', '.join(E2E_SYSTEMS)}, backend:NAME")
