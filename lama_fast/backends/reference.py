"""The reference backend: the unoptimised PyTorch model, eager, on any device torch supports."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from ._checks import cuda_device_reasons

def not_supported_reasons(device: torch.device, dtype: torch.dtype, model: Optional[nn.Module] = None) -> List[str]:
    """Why the reference model cannot run on ``device`` in ``dtype`` (empty when it can); it runs any module."""
    reasons = []
    if dtype not in (torch.float32, torch.float64):
        reasons.append(
            f"the reference model runs in float32 or float64 only (torch.fft has no bfloat16, "
            f"and half precision only at power-of-two sizes on CUDA); got {dtype}"
        )
    if device.type == "cuda":
        reasons += cuda_device_reasons()
    elif device.type != "cpu":
        reasons.append(f"device type {device.type!r} is not supported (cpu or cuda)")
    return reasons


def prepare(generator: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The generator itself, moved to ``device`` and ``dtype``, in eval mode, without gradients."""
    module = generator.to(device=device, dtype=dtype).eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module
