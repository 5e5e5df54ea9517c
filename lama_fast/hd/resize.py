"""The ``resize`` strategy: the size the network runs at, and the image scaled down and back up."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from .settings import HDSettings


def resized_size(settings: HDSettings, height: int, width: int, min_side: int = 1) -> Optional[Tuple[int, int]]:
    """The size ``resize`` runs the network at, or None when the image is small enough as it is.

    The long side becomes ``resize_limit``; when that would take the short side below ``min_side``,
    the scale is the one that leaves the short side at ``min_side`` instead (the long side keeps the
    aspect ratio, and may exceed the limit).  An image whose short side is already below ``min_side``
    is not scaled down at all."""
    if settings.strategy != "resize" or max(height, width) <= settings.resize_limit:
        return None
    scale = settings.resize_limit / max(height, width)
    size = max(1, round(height * scale)), max(1, round(width * scale))
    short = min(height, width)
    floor = min(int(min_side), short)
    if min(size) >= floor:
        return size
    if floor == short:
        return None
    scale = floor / short
    size = round(height * scale), round(width * scale)
    # The short side lands on min_side exactly, whatever the rounding of the scale.
    return (floor, size[1]) if height <= width else (size[0], floor)


def downscale(image: torch.Tensor, hole: torch.Tensor, size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """A float 3×H×W image (bicubic, antialiased, clamped to [0, 1]) and a boolean H×W hole
    at ``size``; a small pixel is a hole when any part of it covers a hole pixel."""
    small = F.interpolate(image[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0]
    coverage = F.interpolate(hole[None, None].to(image.dtype), size=size, mode="area")[0, 0]
    return small.clamp_(0, 1), coverage > 0


def upscale(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """A float 3×h×w image scaled to ``size`` (bicubic, clamped to [0, 1])."""
    return F.interpolate(image[None], size=size, mode="bicubic", align_corners=False)[0].clamp_(0, 1)
