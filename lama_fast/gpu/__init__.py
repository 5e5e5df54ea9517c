"""The GPU generator behind ``optimize(backend="triton")`` and ``optimize(backend="cuda")``.

The generator is rewritten by ``lama_fast.rewrite`` (BatchNorm folded, the two
convolutions of a local-only input merged, the spectral transform's weights
folded by ``fold_spectral``), exactly as for the cpu backend, then placed on the
device: the spectral transforms run as the Triton op
``lama_fast::triton_spectral_transform`` (``lama_fast.kernels.spectral``) or the
extension's CUDA op, the other convolutions through cuDNN (``F.conv2d``) on
channels-last tensors.  Whether each backend can run, and the entry points,
are in ``lama_fast.backends.triton`` and ``lama_fast.backends.cuda``.
"""

from __future__ import annotations

import os

import torch

__all__ = ["GPU_DTYPES", "interpreting"]

# Activation dtypes of the GPU generator (both its spectral implementations).
GPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def interpreting() -> bool:
    """Whether Triton runs in its interpreter (TRITON_INTERPRET=1), where CPU tensors are allowed."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
