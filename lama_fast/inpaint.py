"""Pre- and post-processing around the generator, as the original ``bin/predict.py`` does it.

1. image uint8 -> [0, 1]; mask -> (mask > 0)
2. pad bottom/right to a multiple of 8 with numpy's ``symmetric`` mode
3. generator input = cat(image * (1 - mask), mask)
4. result = mask * output + (1 - mask) * image, cropped back
5. x 255, clip to [0, 255], truncate to uint8
"""

from __future__ import annotations

import itertools
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

PAD_MODULO = 8


def _symmetric_index(size: int, padded: int, device: torch.device) -> torch.Tensor:
    """Indices that extend ``range(size)`` to ``padded`` entries like numpy's 'symmetric' pad (abc|cba|abc...)."""
    idx = torch.arange(padded, device=device) % (2 * size)
    return torch.where(idx >= size, 2 * size - 1 - idx, idx)


def pad_to_modulo(x: torch.Tensor, modulo: int = PAD_MODULO) -> torch.Tensor:
    """Pad the last two dims at the bottom and right to a multiple of ``modulo`` (symmetric mode)."""
    height, width = x.shape[-2:]
    padded_h = -(-height // modulo) * modulo
    padded_w = -(-width // modulo) * modulo
    if (padded_h, padded_w) == (height, width):
        return x
    rows = _symmetric_index(height, padded_h, x.device)
    cols = _symmetric_index(width, padded_w, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def _to_uint8_array(value: Any, what: str, channels: Optional[int]) -> Tuple[np.ndarray, bool]:
    """Validate an image (channels=3) or mask (channels=None) and return it as a numpy array."""
    from_pil = False
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        Image = None
    if Image is not None and isinstance(value, Image.Image):
        from_pil = True
        if channels == 3:
            if value.mode != "RGB":
                raise ValueError(f"{what} must be an RGB image, got PIL mode {value.mode!r}")
        elif value.mode not in ("L", "1"):
            raise ValueError(f"{what} must be a single-channel image (PIL mode 'L' or '1'), got mode {value.mode!r}")
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{what} must be a numpy array or a PIL image, got {type(value).__name__}")
    if channels == 3:
        if value.ndim != 3 or value.shape[2] != 3:
            raise ValueError(f"{what} must have shape HxWx3 (RGB), got {tuple(value.shape)}")
        if value.dtype != np.uint8:
            raise TypeError(f"{what} must be uint8, got {value.dtype}")
    else:
        if value.ndim != 2:
            raise ValueError(f"{what} must have shape HxW, got {tuple(value.shape)}")
        if value.dtype not in (np.uint8, np.bool_):
            raise TypeError(f"{what} must be uint8 or bool, got {value.dtype}")
    if value.shape[0] == 0 or value.shape[1] == 0:
        raise ValueError(f"{what} is empty: shape {tuple(value.shape)}")
    return value, from_pil


class Inpainter:
    """Image + mask in, inpainted image out, around a generator chosen by a backend."""

    def __init__(
        self,
        generator: nn.Module,
        backend: str = "reference",
        backend_reasons: Optional[Dict[str, Optional[str]]] = None,
    ) -> None:
        self.generator = generator
        self.backend = backend
        # Why each other backend was not taken (None for the one that was).
        self.backend_reasons: Dict[str, Optional[str]] = dict(backend_reasons or {backend: None})
        # A fast generator may hold no parameters, only a buffer placed like its inputs.
        first = next(itertools.chain(generator.parameters(), generator.buffers()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.dtype = first.dtype if first is not None else torch.float32

    def __repr__(self) -> str:
        return f"Inpainter(backend={self.backend!r}, device={str(self.device)!r}, dtype={self.dtype})"

    @torch.no_grad()
    def inpaint_batch(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Inpaint N×3×H×W images in [0, 1] under N×1×H×W masks (non-zero = hole); returns N×3×H×W in [0, 1]."""
        if not torch.is_tensor(images) or not torch.is_tensor(masks):
            raise TypeError("inpaint_batch takes torch tensors for images and masks")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape Nx3xHxW, got {tuple(images.shape)}")
        if masks.ndim != 4 or masks.shape[1] != 1:
            raise ValueError(f"masks must have shape Nx1xHxW, got {tuple(masks.shape)}")
        if images.shape[0] != masks.shape[0] or images.shape[2:] != masks.shape[2:]:
            raise ValueError(
                f"images {tuple(images.shape)} and masks {tuple(masks.shape)} differ in batch or spatial size"
            )
        if images.numel() == 0:
            raise ValueError(f"images are empty: shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor in [0, 1], got {images.dtype}")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        if images.min() < 0 or images.max() > 1:
            raise ValueError("images must lie in [0, 1]")
        height, width = images.shape[2:]
        image = pad_to_modulo(images.to(self.device, self.dtype))
        hole = pad_to_modulo(masks.to(self.device) != 0).to(self.dtype)
        output = self.generator(torch.cat((image * (1 - hole), hole), dim=1))
        if not torch.isfinite(output).all():
            raise RuntimeError("the generator produced NaN or infinite values")
        blended = hole * output + (1 - hole) * image
        result = blended[:, :, :height, :width]
        return result.to(images.device, images.dtype)

    def __call__(self, image: Any, mask: Any) -> Any:
        """Inpaint one uint8 H×W×3 RGB image (numpy or PIL) under a uint8/bool H×W mask; returns the same type."""
        array, from_pil = _to_uint8_array(image, "image", 3)
        hole, _ = _to_uint8_array(mask, "mask", None)
        if hole.shape != array.shape[:2]:
            raise ValueError(f"mask shape {tuple(hole.shape)} does not match image size {tuple(array.shape[:2])}")
        if not hole.any():
            result = array.copy()
        else:
            images = torch.tensor(array).permute(2, 0, 1)[None].to(self.dtype) / 255
            masks = torch.tensor(hole != 0)[None, None]
            inpainted = self.inpaint_batch(images, masks).cpu()
            scaled = (inpainted[0].permute(1, 2, 0) * 255).clamp(0, 255)
            # The original truncates (astype), it does not round.
            result = scaled.to(torch.uint8).numpy()
        if from_pil:
            from PIL import Image

            return Image.fromarray(result)
        return result
