"""The image/mask pyramid of the refinement and the pieces of its loss, in plain torch.

The numerics are the original LaMa's (``saicinpainting/evaluation/refinement.py``), which uses
kornia and OpenCV for them:

- ``gaussian_blur``: kornia's ``gaussian_blur2d`` with a 5x5 kernel and sigma 1: the 1-D kernel
  exp(-x^2 / 2) for x = -2..2, normalised, applied along rows and columns, borders mirrored
  (torch ``reflect``: ``cb|abc|ba``), each channel on its own.
- ``pyrdown``: blur, then bilinear halving (``align_corners=False``) to (h // 2, w // 2).
- ``pyrdown_mask``: the same halving for a mask (blurred or not), thresholded back to 0/1.
- ``ELLIPSE``: OpenCV's ``getStructuringElement(MORPH_ELLIPSE, (15, 15))``.
- ``erode``: kornia's ``erosion`` with ``border_type='geodesic'``: the minimum over the pixels
  under the structuring element (centred) that lie inside the image.
- ``budget_size``: the size an image is resized to before refinement so that h * w <= px_budget.
- ``scale_count``: how many scales the pyramid has for an image's short side.
- ``pad_to_modulo``: torch ``reflect`` padding at the bottom and right.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

# Thresholds of the original: a mask value >= EPS is a hole, and >= 1 - EPS a "sure" hole.
EPS = 1e-8
BLUR_SIZE = 5
BLUR_SIGMA = 1.0
ERODE_SIZE = 15


def gaussian_kernel1d(dtype: torch.dtype, device: torch.device, size: int = BLUR_SIZE,
                      sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """The normalised 1-D Gaussian exp(-x^2 / (2 sigma^2)) for x = -(size // 2) .. size // 2."""
    x = torch.arange(size, dtype=dtype, device=device) - size // 2
    kernel = torch.exp(-(x * x) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def gaussian_blur(x: torch.Tensor) -> torch.Tensor:
    """A N×C×H×W tensor blurred with the 5x5, sigma 1 Gaussian, per channel, borders reflected."""
    channels = x.shape[1]
    kernel = gaussian_kernel1d(x.dtype, x.device)
    half = BLUR_SIZE // 2
    rows = kernel.view(1, 1, 1, BLUR_SIZE).expand(channels, 1, 1, BLUR_SIZE)
    cols = kernel.view(1, 1, BLUR_SIZE, 1).expand(channels, 1, BLUR_SIZE, 1)
    x = F.conv2d(F.pad(x, (half, half, 0, 0), mode="reflect"), rows, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, half, half), mode="reflect"), cols, groups=channels)


def halve(x: torch.Tensor) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``) of a N×C×H×W tensor to (H // 2, W // 2)."""
    return F.interpolate(x, size=(x.shape[2] // 2, x.shape[3] // 2), mode="bilinear", align_corners=False)


def pyrdown(image: torch.Tensor) -> torch.Tensor:
    """One pyramid level down: blurred, then halved (N×C×H×W -> N×C×(H//2)×(W//2))."""
    return halve(gaussian_blur(image))


def threshold(mask: torch.Tensor, round_up: bool = True, eps: float = EPS) -> torch.Tensor:
    """A float mask made 0/1: values >= eps become 1 (``round_up``), else only values >= 1 - eps do."""
    limit = eps if round_up else 1.0 - eps
    return (mask >= limit).to(mask.dtype)


def pyrdown_mask(mask: torch.Tensor, blur_mask: bool = True, round_up: bool = True,
                 eps: float = EPS) -> torch.Tensor:
    """A N×1×H×W mask one level down: blurred (``blur_mask``) and halved, then 0/1 as ``threshold`` says."""
    small = pyrdown(mask) if blur_mask else halve(mask)
    return threshold(small, round_up, eps)


def ellipse(size: int = ERODE_SIZE) -> torch.Tensor:
    """OpenCV's elliptic structuring element of an odd ``size``, as a size×size bool tensor.

    Row i holds ones for |j - c| <= round(c * sqrt((r^2 - (i - r)^2) / r^2)), r = c = size // 2,
    rounding half to even as OpenCV's ``saturate_cast<int>`` does."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    r = c = size // 2
    out = torch.zeros(size, size, dtype=torch.bool)
    for i in range(size):
        dy = i - r
        dx = round(c * math.sqrt((r * r - dy * dy) / (r * r))) if r else 0
        out[i, c - dx: c + dx + 1] = True
    return out


ELLIPSE = ellipse()


def _row_runs(kernel: torch.Tensor) -> List[Tuple[int, int, int]]:
    """A centred, symmetric structuring element as (row offset, first column offset, run length) per row.

    Every row of an ellipse is one run of ones; a row without ones is left out."""
    size_h, size_w = kernel.shape
    runs = []
    for i in range(size_h):
        cols = torch.nonzero(kernel[i]).flatten().tolist()
        if not cols:
            continue
        if cols != list(range(cols[0], cols[-1] + 1)):
            raise ValueError(f"structuring element row {i} is not one run of ones")
        runs.append((i - size_h // 2, cols[0] - size_w // 2, len(cols)))
    return runs


def erode(mask: torch.Tensor, kernel: torch.Tensor = ELLIPSE) -> torch.Tensor:
    """Grey erosion of a N×C×H×W tensor by an odd-sized structuring element with its origin at the centre.

    Each output pixel is the minimum of the input pixels under the element's ones that lie inside the
    image (kornia's ``geodesic`` border: outside pixels do not count).  Each row of the element is a
    run, so the minimum is a running minimum along the rows (a max pool of the negated tensor), then a
    minimum over the element's rows, shifted."""
    height, width = mask.shape[-2:]
    kh, kw = kernel.shape
    ry, rx = kh // 2, kw // 2
    # +inf outside the image: it never wins a minimum, and the centre pixel is always inside.
    padded = F.pad(mask, (rx, rx, ry, ry), mode="constant", value=float("inf"))
    negated = -padded
    runs = _row_runs(kernel)
    if not runs:
        raise ValueError("structuring element has no ones")
    run_min = {}
    out = None
    for dy, start, length in runs:
        key = (start, length)
        if key not in run_min:
            # Minimum over columns j + start .. j + start + length - 1, for every output column j.
            pooled = -F.max_pool2d(negated, kernel_size=(1, length), stride=1)
            first = rx + start
            run_min[key] = pooled[..., first: first + width]
        rows = run_min[key][..., ry + dy: ry + dy + height, :]
        out = rows if out is None else torch.minimum(out, rows)
    return out.contiguous()


def erode_mask(mask: torch.Tensor, kernel: torch.Tensor = ELLIPSE, eps: float = EPS) -> torch.Tensor:
    """The eroded mask made 0/1: >= 1 - eps becomes 1, the rest 0 (the original's ``_erode_mask``)."""
    return threshold(erode(mask, kernel), round_up=False, eps=eps)


def budget_size(height: int, width: int, px_budget: int) -> Optional[Tuple[int, int]]:
    """The size an image is refined at when it has more than ``px_budget`` pixels, else None.

    ratio = sqrt(px_budget / (h * w)); the size is (int(h * ratio), int(w * ratio))."""
    if height * width <= px_budget:
        return None
    ratio = float(np.sqrt(px_budget / float(height * width)))
    return int(height * ratio), int(width * ratio)


def budget_resize(image: torch.Tensor, mask: torch.Tensor, size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """A N×C×H×W image and N×1×H×W mask resized bilinearly (no antialiasing) to ``size``; mask values
    above 1e-8 become 1 (smaller ones stay as they are, as in the original)."""
    image = F.interpolate(image, size=size, mode="bilinear", align_corners=False)
    mask = F.interpolate(mask, size=size, mode="bilinear", align_corners=False)
    return image, torch.where(mask > EPS, torch.ones_like(mask), mask)


def scale_count(height: int, width: int, min_side: int, max_scales: int) -> int:
    """Scales of the pyramid: 1 + round(log2(min(h, w) / min_side)) (half to even, at least 1), at most
    ``max_scales``."""
    breadth = min(height, width)
    return min(1 + int(round(max(0.0, float(np.log2(breadth / min_side))))), max_scales)


def scale_sizes(height: int, width: int, min_side: int, max_scales: int) -> List[Tuple[int, int]]:
    """The (h, w) of each scale of the pyramid of an h×w image, lowest resolution first."""
    sizes = [(height, width)]
    for _ in range(scale_count(height, width, min_side, max_scales) - 1):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes[::-1]


def build_pyramid(image: torch.Tensor, mask: torch.Tensor, min_side: int,
                  max_scales: int) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Images and masks of each scale, lowest resolution first: each level is ``pyrdown`` /
    ``pyrdown_mask`` (blurred, rounded up) of the one above it."""
    images, masks = [image], [mask]
    for _ in range(scale_count(image.shape[2], image.shape[3], min_side, max_scales) - 1):
        images.append(pyrdown(images[-1]))
        masks.append(pyrdown_mask(masks[-1]))
    return images[::-1], masks[::-1]


def padded_size(size: int, modulo: int) -> int:
    """``size`` rounded up to a multiple of ``modulo``."""
    return -(-size // modulo) * modulo


def pad_to_modulo(x: torch.Tensor, modulo: int) -> torch.Tensor:
    """A N×C×H×W tensor padded at the bottom and right to multiples of ``modulo`` (torch ``reflect``:
    the edge pixel is not repeated; the padding must be smaller than the side)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = padded_size(height, modulo) - height, padded_size(width, modulo) - width
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
