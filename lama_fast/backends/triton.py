"""The triton backend: the GPU generator (lama_fast.gpu) with the spectral transform as Triton kernels."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn

from ._checks import cuda_device_reasons, gpu_dtype_reasons, lama_layers_reasons


def not_supported_reasons(device: torch.device, dtype: torch.dtype, model: Optional[nn.Module] = None) -> List[str]:
    """Why the triton backend cannot run on ``device`` in ``dtype`` (and ``model``, when given); empty when it can."""
    from ..gpu import interpreting

    reasons = gpu_dtype_reasons(dtype, "triton")
    if device.type == "cuda":
        reasons += cuda_device_reasons()
    elif device.type == "cpu":
        if not interpreting():
            reasons.append("no CUDA device: the triton backend runs on CUDA GPUs, or on the CPU only under "
                           "Triton's interpreter (TRITON_INTERPRET=1 set before triton is imported)")
    else:
        reasons.append(f"the triton backend runs on CUDA devices, not on {device.type}")
    if not reasons:
        from lama_fast.kernels import triton_reasons

        reasons += triton_reasons()
    return reasons + lama_layers_reasons(model, "triton")


def prepare(generator: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The triton-backend module computing ``generator`` on ``device`` with activations in ``dtype``."""
    from ..gpu.generator import build_gpu_generator

    return build_gpu_generator(generator, device, dtype)
