"""Refinement of an inpainting, as the original LaMa's ``predict.py refine=True`` does it.

    settings = RefineSettings(n_iters=15, lr=0.002, min_side=512, max_scales=3, px_budget=1_800_000, modulo=8)
    result = refine_tensors(refine_model(generator, "reference"), image, mask, settings)
    result.output                                  # 1x3xhxw, hole pixels refined, the rest the image

The modules: ``pyramid`` (the image/mask pyramid and the loss's blur, halving and erosion), ``loop``
(settings, result and the optimisation), ``reference`` (the generator's own layers, eager autograd)
and ``cpu`` (the fused CPU layers with their backward kernels).  ``Inpainter.refine`` is the
image-level entry point.
"""

from __future__ import annotations

from typing import Any, Protocol, Tuple, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .loop import Progress, RefineResult, RefineSettings, check_sizes, plan_sizes, refine_tensors
from .reference import ReferenceRefineModel

__all__ = ["Progress", "RefineModel", "RefineResult", "RefineSettings", "ReferenceRefineModel", "check_sizes",
           "plan_sizes", "check_backend", "refine_model", "resize_input", "refine_tensors", "REFINE_BACKENDS"]

# The backends whose generator can be split for the refinement.
REFINE_BACKENDS = ("reference", "cpu")


@runtime_checkable
class RefineModel(Protocol):
    """A generator split at its first residual block, as the refinement drives it.

    ``front(x)`` takes the N×4×H×W masked image and mask and gives the (local, global) features at
    the residual blocks' input (called under ``torch.no_grad()``; it may return views of work
    buffers, which the caller copies); ``rear(z1, z2)`` gives the N×3×H×W prediction and is
    differentiable with respect to z1 and z2 (never the weights); ``close()`` releases what the
    model holds (caches, changed flags) and is called when a refinement ends, also on error."""

    dtype: torch.dtype
    device: torch.device

    def front(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]: ...

    def rear(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None: ...


def check_backend(backend: str) -> None:
    """Raise ValueError unless the refinement can run on ``backend``."""
    if backend not in REFINE_BACKENDS:
        raise ValueError(f"refine runs on the {' and '.join(REFINE_BACKENDS)} backends, not on {backend!r}")


def refine_model(generator: nn.Module, backend: str) -> RefineModel:
    """The refinement's model for a generator prepared by ``backend`` ("reference" or "cpu")."""
    check_backend(backend)
    if backend == "cpu":
        from .cpu import CpuRefineModel

        return CpuRefineModel(generator)
    return ReferenceRefineModel(generator)


def resize_input(image: Any, size: Tuple[int, int], dtype: torch.dtype, device: torch.device) -> Any:
    """The caller's image (numpy, PIL or torch, as ``prepare_image`` takes it) at ``size`` (h, w), in
    its own container, layout and dtype: every channel (alpha too) resized bilinearly
    (``align_corners=False``, no antialiasing) in ``dtype`` on ``device``, the refinement's resize;
    uint8 values are divided by 255 first and truncated back (x 255, clipped), float values clipped
    to [0, 1].  PIL images keep their mode and ``info`` (P and PA become RGB or RGBA, as
    ``prepare_image`` makes them; mode 1 is resized as 0/1 and thresholded at 0.5)."""
    if isinstance(image, Image.Image):
        mode = image.mode
        if mode in ("P", "PA"):
            image = image.convert("RGBA" if mode == "PA" or image.has_transparency_data else "RGB")
            mode = image.mode
        array = np.asarray(image)
        if mode == "1":
            small = _resize_array(array.astype(np.float32), size, dtype, device) >= 0.5
            result = Image.fromarray(small)
        else:
            small = _resize_array(array, size, dtype, device)
            result = Image.frombytes(mode, (size[1], size[0]), np.ascontiguousarray(small).tobytes())
        result.info.update(image.info)
        return result
    if isinstance(image, np.ndarray):
        return _resize_array(image, size, dtype, device)
    if torch.is_tensor(image):
        tensor = image.detach()
        chw = tensor if tensor.ndim == 3 else tensor[None]
        return _resize_chw(chw, size, dtype, device).to(tensor.device).reshape(*tensor.shape[:-2], *size)
    raise TypeError(f"image must be a numpy array, a PIL image or a torch tensor, got {type(image).__name__}")


def _resize_array(array: np.ndarray, size: Tuple[int, int], dtype: torch.dtype, device: torch.device) -> np.ndarray:
    """An HxW or HxWxC array resized as ``resize_input`` says, same dtype and layout."""
    hwc = array.reshape(array.shape[0], array.shape[1], -1)
    chw = torch.from_numpy(np.ascontiguousarray(hwc.transpose(2, 0, 1)).astype(hwc.dtype.newbyteorder("=")))
    small = _resize_chw(chw, size, dtype, device).cpu().numpy().transpose(1, 2, 0)
    return np.ascontiguousarray(small).reshape(*size, *array.shape[2:]).astype(array.dtype)


def _resize_chw(chw: torch.Tensor, size: Tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A CxHxW uint8 or float tensor (C in 1..4) resized as ``resize_input`` says, same dtype.

    The colour channels are resized as the refinement resizes the image, three channels at once (a grey
    channel repeated three times): torch's bilinear kernel does not give every channel count bit-identical
    results.  An alpha channel (the last of 2 or 4) is resized on its own."""
    channels = chw.shape[0]

    def resized(part: torch.Tensor) -> torch.Tensor:
        work = part.to(device, dtype).contiguous()
        if chw.dtype == torch.uint8:
            work = work / 255
        small = F.interpolate(work[None], size=size, mode="bilinear", align_corners=False)[0]
        if chw.dtype == torch.uint8:
            return (small * 255).clamp_(0, 255).to(torch.uint8)
        return small.clamp_(0, 1).to(chw.dtype)

    colour = resized(chw[:3] if channels >= 3 else chw[:1].expand(3, -1, -1))
    parts = [colour if channels >= 3 else colour[:1]]
    if channels in (2, 4):
        parts.append(resized(chw[channels - 1:]))
    return torch.cat(parts)
