"""The GPU generator behind ``optimize(backend="triton")``.

The generator is rewritten as for the cpu backend (``lama_fast.fast.convert``:
BatchNorm folded, the two convolutions of a local-only input merged, the
spectral transform's weights folded by ``fuse_spectral``), then placed on the
device: the spectral transforms run as the Triton op
``lama_fast::triton_spectral_transform`` (``lama_fast.kernels.spectral``), the
other convolutions through cuDNN (``F.conv2d``) on channels-last tensors.
"""

from __future__ import annotations

import os
from typing import List

import torch

__all__ = ["triton_reasons", "build_triton_generator", "cuda_reasons", "build_cuda_generator"]

# Activation dtypes of the GPU generator (both its spectral implementations).
GPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def interpreting() -> bool:
    """Whether Triton runs in its interpreter (TRITON_INTERPRET=1), where CPU tensors are allowed."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_reasons(device: torch.device, dtype: torch.dtype) -> List[str]:
    """Why the triton backend cannot run on ``device`` in ``dtype`` (empty when it can)."""
    reasons = []
    if dtype not in GPU_DTYPES:
        reasons.append(f"the triton backend runs in float32, bfloat16 or float16; got {dtype}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            reasons.append("CUDA was requested but torch.cuda.is_available() is False")
    elif device.type == "cpu":
        if not interpreting():
            reasons.append("no CUDA device: the triton backend runs on CUDA GPUs, or on the CPU only under "
                           "Triton's interpreter (TRITON_INTERPRET=1 set before triton is imported)")
    else:
        reasons.append(f"the triton backend runs on CUDA devices, not on {device.type}")
    if not reasons:
        from lama_fast.kernels import triton_status

        why = triton_status()
        if why is not None:
            reasons.append(why)
    return reasons


def build_triton_generator(generator: torch.nn.Module, device: torch.device, dtype: torch.dtype):
    """The triton-backend module computing ``generator`` on ``device`` with activations in ``dtype``."""
    from .generator import build_gpu_generator

    return build_gpu_generator(generator, device, dtype)


def cuda_reasons(device: torch.device, dtype: torch.dtype) -> List[str]:
    """Why the cuda backend (the extension's CUDA kernels) cannot run on ``device`` in ``dtype``."""
    reasons = []
    if dtype not in GPU_DTYPES:
        reasons.append(f"the cuda backend runs in float32, bfloat16 or float16; got {dtype}")
    if device.type != "cuda":
        reasons.append(f"the cuda backend runs on CUDA devices, not on {device.type}")
    elif not torch.cuda.is_available():
        reasons.append("CUDA was requested but torch.cuda.is_available() is False")
    from lama_fast.ops.spectral import cuda_kernels_status

    why = cuda_kernels_status()
    if why is not None:
        reasons.append(why)
    return reasons


def build_cuda_generator(generator: torch.nn.Module, device: torch.device, dtype: torch.dtype):
    """The cuda-backend module: the triton backend's generator with the extension's spectral op."""
    from .generator import build_gpu_generator

    return build_gpu_generator(generator, device, dtype, spectral="cuda")
