"""The cuda backend: the GPU generator (lama_fast.gpu) with the spectral transform as the extension's CUDA kernels."""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

from ._checks import cuda_device_reasons, gpu_dtype_reasons, lama_layers_reasons


def not_supported_reasons(device: torch.device, dtype: torch.dtype, model: Optional[nn.Module] = None) -> List[str]:
    """Why the cuda backend cannot run on ``device`` in ``dtype`` (and ``model``, when given); empty when it can."""
    reasons = gpu_dtype_reasons(dtype, "cuda")
    if device.type != "cuda":
        reasons.append(f"the cuda backend runs on CUDA devices, not on {device.type}")
    else:
        reasons += cuda_device_reasons()
    return reasons + cuda_kernels_reasons() + lama_layers_reasons(model, "cuda")


def prepare(generator: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The cuda-backend module: the triton backend's generator with the extension's spectral op."""
    from ..gpu.generator import build_gpu_generator

    return build_gpu_generator(generator, device, dtype, spectral="cuda")


def cuda_kernels_reasons() -> List[str]:
    """Why ``lama_fast._C`` has no CUDA kernels of the spectral ops (empty when it has them)."""
    from .._build import build_info, extension_reasons

    reasons = extension_reasons()
    if reasons:
        return reasons
    if not torch._C._dispatch_has_kernel_for_dispatch_key("lama_fast::spectral_transform", "CUDA"):
        return [f"lama_fast._C has no CUDA kernels (cuda_extension {build_info()['cuda_extension']})"]
    return []


def cuda_precision_of(dtype: torch.dtype) -> Dict[str, str]:
    """What each step of the CUDA extension's spectral transform runs in, for activations of ``dtype``."""
    name = str(dtype).replace("torch.", "")
    fft = "float64" if dtype == torch.float64 else "float32"
    gemm = f"{name} (cuBLAS through ATen" + (", TF32 if torch.backends.cuda.matmul.allow_tf32)"
                                              if dtype == torch.float32 else ")")
    return {"conv1": gemm, "fft": f"{fft} cuFFT, unnormalised, plans cached per shape; the norm's scales in the "
                                  "mixing epilogue, DC/Nyquist columns made Hermitian before the c2r",
            "frequency_mix": gemm + (f" on the spectrum scaled by 1/sqrt(H*W) and rounded to {name}"
                                     if dtype in (torch.float16, torch.bfloat16) else ""),
            "conv2": gemm, "intermediates": fft, "output": name}
