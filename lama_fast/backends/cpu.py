"""The cpu backend: the fused CPU generator (lama_fast.fast) around the C++ spectral transform."""

from __future__ import annotations

import platform
from typing import List, Optional, Set

import torch
from torch import nn

from ._checks import lama_layers_reasons


def not_supported_reasons(device: torch.device, dtype: torch.dtype, model: Optional[nn.Module] = None) -> List[str]:
    """Why the cpu backend cannot run on ``device`` in ``dtype`` (and ``model``, when given); empty when it can."""
    reasons = []
    if device.type != "cpu":
        reasons.append(f"the cpu backend runs on the CPU only, not on {device.type}")
    if dtype not in (torch.float32, torch.bfloat16, torch.float64):
        reasons.append(f"the cpu backend runs in float32, bfloat16 or float64; got {dtype}")
    if dtype in (torch.float32, torch.bfloat16) and not torch.backends.mkldnn.is_available():
        reasons.append("this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)")
    if dtype == torch.bfloat16 and not cpu_has_bf16():
        reasons.append("this CPU has no bfloat16 instructions (AVX512-BF16 or AMX), so bfloat16 would be slower")
    try:
        from ..ops.spectral import spectral_reasons
    except ImportError as error:  # a broken install: the ops package itself is missing
        reasons.append(f"lama_fast.ops does not import ({error})")
    else:
        from ..ops.layout import layout_reasons

        reasons += spectral_reasons() + layout_reasons()
    return reasons + lama_layers_reasons(model, "cpu")


def prepare(generator: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The fused CPU module computing ``generator`` in ``dtype`` (the generator is only read)."""
    from ..fast import build_fast_generator

    return build_fast_generator(generator, dtype)


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` says."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> Set[str]:
    """The flags line of /proc/cpuinfo as a set (empty where there is none)."""
    return set((_cpuinfo("flags") or "").split())


def _cpuinfo(field: str) -> Optional[str]:
    """The value of the first ``field`` line of /proc/cpuinfo (None where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX), as oneDNN sees it where torch says."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    if check is not None:
        try:
            return bool(check())
        except RuntimeError:
            return False
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags
