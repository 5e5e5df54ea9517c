"""High-resolution strategies: which parts of a large photo the network sees.

``original``
    the whole image, as the original LaMa ``predict.py`` runs it.
``crop``
    when the long side exceeds ``crop_trigger_size``: each connected hole
    region's bounding box, grown by ``crop_margin`` on every side and clipped
    to the image, boxes that overlap merged, each box inpainted at full
    resolution and its hole pixels pasted back.  Images at or below the
    trigger size run whole.
``resize``
    when the long side exceeds ``resize_limit``: the image is scaled down so
    its long side is ``resize_limit`` (bicubic with antialiasing), inpainted,
    and the result scaled back up (bicubic) for the hole pixels only.

Every strategy changes hole pixels only: the caller keeps the input's pixels
outside the hole bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

STRATEGIES = ("original", "crop", "resize")
DEFAULT_STRATEGY = "crop"
DEFAULT_CROP_MARGIN = 128
DEFAULT_CROP_TRIGGER_SIZE = 800
DEFAULT_RESIZE_LIMIT = 1280
# Hole pixels are grouped on a grid of cells no larger than this before the exact
# per-pixel boxes are taken; see hole_boxes().
_MAX_CELL = 32


class Box(NamedTuple):
    """A half-open pixel rectangle: rows top..bottom-1, columns left..right-1."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    def slices(self) -> Tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)


@dataclass(frozen=True)
class HDSettings:
    """The strategy and its three sizes, checked."""

    strategy: str = DEFAULT_STRATEGY
    crop_margin: int = DEFAULT_CROP_MARGIN
    crop_trigger_size: int = DEFAULT_CROP_TRIGGER_SIZE
    resize_limit: int = DEFAULT_RESIZE_LIMIT

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"hd_strategy must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}")
        for name, low in (("crop_margin", 0), ("crop_trigger_size", 0), ("resize_limit", 8)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")

    def replace(self, **changes) -> "HDSettings":
        values = {k: getattr(self, k) for k in ("strategy", "crop_margin", "crop_trigger_size", "resize_limit")}
        values.update({k: v for k, v in changes.items() if v is not None})
        return HDSettings(**values)


def _label_cells(cells: torch.Tensor) -> torch.Tensor:
    """8-connected component labels of a boolean grid (True cells get a label >= 0, others -1).

    Works on runs of consecutive True cells in each row: runs in neighbouring rows
    that touch (diagonals included) are joined by minimum-label propagation with
    pointer jumping, so the cost follows the number of runs, not of cells."""
    grid = cells.numpy()
    gh, gw = grid.shape
    edges = np.zeros((gh, gw + 2), np.int8)
    edges[:, 1:-1] = grid
    step = np.diff(edges, axis=1)
    start_rows, start_cols = np.nonzero(step == 1)   # row-major, so starts and ends pair up
    _, end_cols = np.nonzero(step == -1)             # exclusive ends
    runs = start_rows.size
    width = gw + 2
    start_keys = start_rows * width + start_cols
    end_keys = start_rows * width + end_cols
    # The runs of the next row that touch run a: end >= start_a and start <= end_a (8-connected).
    next_row = (start_rows + 1) * width
    first = np.searchsorted(end_keys, next_row + start_cols, side="left")
    last = np.searchsorted(start_keys, next_row + end_cols, side="right")
    counts = np.maximum(last - first, 0)
    a = np.repeat(np.arange(runs), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    b = np.repeat(first, counts) + offsets
    labels = np.arange(runs)
    while a.size:
        low = np.minimum(labels[a], labels[b])
        joined = labels.copy()
        np.minimum.at(joined, a, low)
        np.minimum.at(joined, b, low)
        joined = joined[joined]
        if np.array_equal(joined, labels):
            break
        labels = joined
    out = np.full(gh * gw, -1, np.int64)
    lengths = end_cols - start_cols
    flat_starts = start_rows * gw + start_cols
    positions = np.repeat(flat_starts, lengths) + (np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths))
    out[positions] = np.repeat(labels, lengths)
    return torch.from_numpy(out.reshape(gh, gw))


def hole_boxes(hole: torch.Tensor, link_distance: int = 1) -> List[Box]:
    """Exact pixel bounding boxes of the hole's regions.

    Regions are 8-connected; with ``link_distance`` > 1 hole pixels may also be
    grouped when closer than that (the grouping works on a grid of cells of that
    size), which merges regions whose boxes grown by half that distance would
    overlap anyway.  ``hole`` is a boolean H×W tensor.
    """
    if hole.ndim != 2 or hole.dtype != torch.bool:
        raise ValueError(f"hole must be a boolean HxW tensor, got {hole.dtype} of shape {tuple(hole.shape)}")
    hole = hole.cpu()
    if not hole.any():
        return []
    cell = max(1, int(link_distance))
    height, width = hole.shape
    gh, gw = -(-height // cell), -(-width // cell)
    padded = F.pad(hole[None, None].to(torch.uint8), (0, gw * cell - width, 0, gh * cell - height))[0, 0].bool()
    blocks = padded.view(gh, cell, gw, cell)
    rows_any = blocks.any(dim=3)  # gh, cell, gw: which rows of each cell hold a hole pixel
    cols_any = blocks.any(dim=1)  # gh, gw, cell
    cells = rows_any.any(dim=1)
    labels = _label_cells(cells)

    offsets = torch.arange(cell)
    no = cell + 1
    first_row = torch.where(rows_any, offsets[None, :, None], torch.full_like(offsets[None, :, None], no)).amin(dim=1)
    last_row = torch.where(rows_any, offsets[None, :, None], torch.full_like(offsets[None, :, None], -1)).amax(dim=1)
    first_col = torch.where(cols_any, offsets[None, None, :], torch.full_like(offsets[None, None, :], no)).amin(dim=2)
    last_col = torch.where(cols_any, offsets[None, None, :], torch.full_like(offsets[None, None, :], -1)).amax(dim=2)
    cell_rows = torch.arange(gh)[:, None] * cell
    cell_cols = torch.arange(gw)[None, :] * cell
    selected = labels >= 0
    lab = labels[selected]
    tops = (cell_rows + first_row)[selected]
    bottoms = (cell_rows + last_row + 1)[selected]
    lefts = (cell_cols + first_col)[selected]
    rights = (cell_cols + last_col + 1)[selected]
    unique, inverse = torch.unique(lab, return_inverse=True)
    n = unique.numel()

    def reduce(values: torch.Tensor, how: str) -> torch.Tensor:
        init = torch.full((n,), height * width if how == "amin" else -1, dtype=torch.long)
        return init.scatter_reduce(0, inverse, values.long(), reduce=how, include_self=True)

    box_tops, box_lefts = reduce(tops, "amin"), reduce(lefts, "amin")
    box_bottoms, box_rights = reduce(bottoms, "amax"), reduce(rights, "amax")
    boxes = [Box(int(t), int(l), int(b), int(r)) for t, l, b, r in zip(box_tops, box_lefts, box_bottoms, box_rights)]
    return sorted(boxes)


def _merge_overlapping(boxes: List[Box]) -> List[Box]:
    """Union boxes that overlap (share at least one pixel) until none do."""
    arr = np.array(boxes, dtype=np.int64).reshape(-1, 4)
    while len(arr) > 1:
        top, left, bottom, right = arr.T
        overlap = (
            (top[:, None] < bottom[None, :]) & (top[None, :] < bottom[:, None])
            & (left[:, None] < right[None, :]) & (left[None, :] < right[:, None])
        )
        # Group boxes by connectivity of the overlap graph (repeated min-propagation).
        group = np.arange(len(arr))
        while True:
            candidate = np.where(overlap, group[None, :], len(arr)).min(axis=1)
            candidate = np.minimum(candidate, group)
            if np.array_equal(candidate, group):
                break
            group = candidate
        if len(np.unique(group)) == len(arr):
            break
        merged = []
        for g in np.unique(group):
            members = arr[group == g]
            merged.append((members[:, 0].min(), members[:, 1].min(), members[:, 2].max(), members[:, 3].max()))
        arr = np.array(merged, dtype=np.int64)
    return sorted(Box(*(int(v) for v in row)) for row in arr)


def plan_crops(hole: torch.Tensor, margin: int = DEFAULT_CROP_MARGIN) -> List[Box]:
    """The boxes the ``crop`` strategy inpaints: each hole region's bounding box grown by
    ``margin`` on every side, clipped to the image, overlapping boxes merged.

    Every hole pixel lies in exactly one box, and each box holds whole hole regions.
    """
    height, width = hole.shape
    # Regions closer than 2 * margin have overlapping grown boxes, so grouping them
    # first (on cells up to that size) gives the same merged boxes, faster.
    link = max(1, min(margin, _MAX_CELL))
    grown = [
        Box(max(0, b.top - margin), max(0, b.left - margin), min(height, b.bottom + margin), min(width, b.right + margin))
        for b in hole_boxes(hole, link)
    ]
    return _merge_overlapping(grown) if grown else []


def uses_crop(settings: HDSettings, height: int, width: int) -> bool:
    return settings.strategy == "crop" and max(height, width) > settings.crop_trigger_size


def resized_size(settings: HDSettings, height: int, width: int) -> Optional[Tuple[int, int]]:
    """The size ``resize`` runs the network at, or None when the image is small enough as it is."""
    if settings.strategy != "resize" or max(height, width) <= settings.resize_limit:
        return None
    scale = settings.resize_limit / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def downscale(image: torch.Tensor, hole: torch.Tensor, size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """A float 3×H×W image (bicubic, antialiased, clamped to [0, 1]) and a boolean H×W hole
    at ``size``; a small pixel is a hole when any part of it covers a hole pixel."""
    small = F.interpolate(image[None], size=size, mode="bicubic", antialias=True, align_corners=False)[0]
    coverage = F.interpolate(hole[None, None].to(image.dtype), size=size, mode="area")[0, 0]
    return small.clamp_(0, 1), coverage > 0


def upscale(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """A float 3×h×w image scaled to ``size`` (bicubic, clamped to [0, 1])."""
    return F.interpolate(image[None], size=size, mode="bicubic", align_corners=False)[0].clamp_(0, 1)


@dataclass
class Plan:
    """What the network will see for one image: the strategy that runs, its regions, and the memory check."""

    requested: str
    strategy: str
    image_size: Tuple[int, int]
    # The regions inpainted, in image pixels: the whole image for ``original`` and ``resize``.
    boxes: List[Box]
    # ``resize`` only: the size the network runs at.
    run_size: Optional[Tuple[int, int]] = None
    # Estimated peak memory of the largest run beyond what is already held, and the budget it was checked against.
    peak_bytes: Optional[int] = None
    budget_bytes: Optional[int] = None
    notes: List[str] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.notes is None:
            self.notes = []

    def describe(self) -> str:
        height, width = self.image_size
        if self.strategy == "crop":
            what = f"crop: {len(self.boxes)} region(s) " + ", ".join(f"{b.width}x{b.height}+{b.left}+{b.top}" for b in self.boxes)
        elif self.strategy == "resize" and self.run_size is not None:
            what = f"resize: the network runs at {self.run_size[1]}x{self.run_size[0]}"
        else:
            what = f"{self.strategy}: the whole {width}x{height} image"
        return "; ".join([what] + self.notes)
