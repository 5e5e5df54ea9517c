"""lama_fast: LaMa inpainting with fused Fourier-convolution kernels, checked against a reference model.

    import lama_fast
    inpainter = lama_fast.load("big-lama.pt")        # .ckpt, TorchScript .pt or .safetensors
    result = inpainter(image, mask)                  # numpy / PIL / torch image + mask -> the same type
    result = inpainter(image, mask, hd_strategy="crop", crop_margin=128)  # large photos: see lama_fast.hd
    fast = lama_fast.optimize(generator)             # any LaMa generator module
    lama_fast.info()                                 # versions, CPU, compiled parts and backends, as data
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

import torch

from . import model
from ._info import info
from .backends import available_backends, optimize
from .inpaint import Inpainter

__version__ = "0.1.0"
__all__ = ["Inpainter", "available_backends", "info", "load", "model", "optimize", "__version__"]


def load(
    path: Union[str, os.PathLike],
    device: Union[str, torch.device] = "cpu",
    backend: str = "auto",
    dtype: torch.dtype = torch.float32,
    cuda_graphs: Optional[bool] = None,
    **settings: Any,
) -> Inpainter:
    """Load a LaMa checkpoint (.ckpt, TorchScript .pt, .safetensors, state dict) into an Inpainter.

    ``cuda_graphs`` is ``optimize()``'s.  ``settings`` are Inpainter's keyword arguments:
    ``hd_strategy`` ("crop", "original" or "resize"), ``crop_margin``, ``crop_trigger_size``,
    ``resize_limit`` and ``max_memory``."""
    if settings:
        # Checked before the file is read, like the backend.
        Inpainter.check_settings(**settings)
    from .backends import apply_cuda_graphs, check_cuda_graphs, select_backend
    from .checkpoint import load_generator

    device = torch.device(device)
    check_cuda_graphs(cuda_graphs, device)
    # Resolve the backend before reading a 200 MB file, so a bad request fails at once.
    chosen, reasons = select_backend(backend, device, dtype)
    weights_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    generator = load_generator(path, device="cpu", dtype=weights_dtype)
    from .backends import prepare_with_fallback

    module, chosen, reasons = prepare_with_fallback(chosen, reasons, generator, device, dtype, backend == "auto",
                                                     owned=True)
    module = apply_cuda_graphs(module, cuda_graphs)
    return Inpainter(module, chosen.name, reasons, **settings)
