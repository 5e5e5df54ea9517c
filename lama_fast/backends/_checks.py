"""Reasons shared by several backends."""

from __future__ import annotations

from typing import List, Optional

import torch
from torch import nn


def cuda_device_reasons() -> List[str]:
    """Why a CUDA device cannot be used (empty when torch sees one)."""
    if torch.cuda.is_available():
        return []
    return ["CUDA was requested but torch.cuda.is_available() is False"]


def lama_layers_reasons(model: Optional[nn.Module], backend: str) -> List[str]:
    """Why a backend that rewrites the layers cannot read ``model`` (empty when it can, or when no
    model is given): a LaMa generator keeps its layers in a ``model`` Sequential."""
    if model is None:
        return []
    if not isinstance(model, nn.Module):
        return [f"the {backend} backend takes a torch.nn.Module, got {type(model).__name__}"]
    layers = getattr(model, "model", None)
    if not isinstance(layers, (nn.Sequential, nn.ModuleList)) or len(layers) == 0:
        return [f"{type(model).__name__} has no 'model' Sequential of LaMa layers"]
    return []


def gpu_dtype_reasons(dtype: torch.dtype, backend: str) -> List[str]:
    """Why the GPU generator of ``backend`` cannot compute in ``dtype`` (empty when it can)."""
    from ..gpu import GPU_DTYPES

    if dtype in GPU_DTYPES:
        return []
    return [f"the {backend} backend runs in float32, bfloat16 or float16; got {dtype}"]
