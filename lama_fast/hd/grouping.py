"""Crop planning, stage one: the bounding boxes of the hole regions, grown into crop boxes.

The mask is cut into cells; cells close enough that any hole pixels in them have overlapping grown
boxes are linked (a dilation of the cell grid), and the linked cells' exact pixel bounding boxes are
taken.  It reads the mask in bands of rows, so its memory is a band plus a few numbers per group, and
its time is linear in the pixels.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np
import torch

from .labels import _BAND_CELLS, _BandLabeller, _run_of, _runs
from .settings import DEFAULT_CROP_MARGIN

# Hole pixels are grouped on a grid of cells no larger than this before the exact
# per-pixel boxes are taken; see _grouping().
_MAX_CELL = 32


def _grouping(margin: int, min_side: int) -> Tuple[int, int]:
    """Cell size and link distance (in cells) of the grouping stage for a crop margin.

    Hole pixels in cells at most ``link`` cells apart are at most (link + 1) * cell - 1 <= 2 * margin
    pixels apart on each axis, so their grown boxes overlap and merging them early changes nothing.
    Without a margin, or when min_side may grow a region's box, the groups must be the regions
    themselves (cells of one pixel, linked to their 8 neighbours)."""
    if margin == 0 or min_side > margin + 1:
        return 1, 1
    cell = min(margin, _MAX_CELL)
    return cell, max(1, (2 * margin + 1) // cell - 1)


def _window_or(grid: np.ndarray, length: int, axis: int) -> np.ndarray:
    """OR of each ``length`` consecutive entries along ``axis`` (the result is length - 1 shorter there),
    in log2(length) passes."""
    span = 1
    while span < length:
        step = min(span, length - span)
        head = [slice(None)] * grid.ndim
        tail = [slice(None)] * grid.ndim
        head[axis], tail[axis] = slice(0, grid.shape[axis] - step), slice(step, None)
        grid = grid[tuple(head)] | grid[tuple(tail)]
        span += step
    return grid


def _occupied_cells(hole: np.ndarray, cell: int) -> Tuple[np.ndarray, np.ndarray]:
    """Which cells (cell x cell pixels) hold hole pixels, and for each the offsets within the cell of
    its first row, first column, last row and last column that do (gh x gw x 4)."""
    height, width = hole.shape
    gh, gw = -(-height // cell), -(-width // cell)
    occupied = np.zeros((gh, gw), bool)
    extents = np.zeros((gh, gw, 4), np.uint8 if cell <= 256 else np.int32)
    step = max(1, _BAND_CELLS // (gw * cell * cell))
    for y0 in range(0, gh, step):
        y1 = min(gh, y0 + step)
        padded = np.zeros(((y1 - y0) * cell, gw * cell), bool)
        pixels = hole[y0 * cell:y1 * cell]
        padded[:pixels.shape[0], :width] = pixels
        blocks = padded.reshape(y1 - y0, cell, gw, cell)
        rows_any = blocks.any(axis=3)  # cell row, row within the cell, cell column
        cols_any = blocks.any(axis=1)  # cell row, cell column, column within the cell
        del padded, blocks
        occupied[y0:y1] = rows_any.any(axis=1)
        extents[y0:y1, :, 0] = rows_any.argmax(axis=1)
        extents[y0:y1, :, 1] = cols_any.argmax(axis=2)
        extents[y0:y1, :, 2] = cell - 1 - rows_any[:, ::-1].argmax(axis=1)
        extents[y0:y1, :, 3] = cell - 1 - cols_any[:, :, ::-1].argmax(axis=2)
    return occupied, extents


def _hole_groups(hole: np.ndarray, cell: int, link: int) -> np.ndarray:
    """Exact pixel bounding boxes (k x 4: top, left, bottom, right, half-open) of the groups of hole
    pixels whose cells (cell x cell pixels) are linked through chains of cells at most ``link`` apart
    (Chebyshev distance); ``cell = link = 1`` gives the 8-connected regions.  Sorted."""
    height, width = hole.shape
    if height == 0 or width == 0:
        return np.empty((0, 4), np.int64)
    if cell == 1:
        occupied, extents = hole, None
    else:
        occupied, extents = _occupied_cells(hole, cell)
    gh, gw = occupied.shape
    # A cell's link square covers cells i - reach .. i - reach + link - 1: squares of cells up to link
    # apart touch or overlap, so 8-connected components of the dilated grid are the groups.
    reach = (link - 1) // 2
    band = max(1, _BAND_CELLS // gw)
    labeller = _BandLabeller(diagonal=True)
    tops, lefts, bottoms, rights = [], [], [], []
    for y0 in range(0, gh, band):
        y1 = min(gh, y0 + band)
        own = occupied[y0:y1]
        if link == 1:
            linked = own
        else:
            # Rows y + reach - link + 1 .. y + reach for each y of the band, with empty rows off the grid,
            # then the same along the columns.
            o0, o1 = max(0, y0 + reach - link + 1), min(gh, y1 + reach)
            window = np.zeros((y1 - y0 + link - 1, gw + link - 1), bool)
            first = o0 - (y0 + reach - link + 1)
            window[first:first + o1 - o0, link - 1 - reach:link - 1 - reach + gw] = occupied[o0:o1]
            linked = _window_or(_window_or(window, link, 0), link, 1)
            del window
        base = labeller.count
        rows, starts, ends, ids = labeller.add(y0, linked)
        found = labeller.count - base
        if cell == 1 and link == 1:
            run = np.arange(rows.size)  # the seeds are the runs themselves
            seed = (rows + y0, starts, rows + y0 + 1, ends)
        elif cell == 1:
            # Each hole run of the band lies inside one run of the linked grid.
            seed_rows, seed_starts, seed_ends = _runs(own)
            run = _run_of(rows, starts, gw, seed_rows, seed_starts)
            seed = (seed_rows + y0, seed_starts, seed_rows + y0 + 1, seed_ends)
        else:
            cy, cx = np.nonzero(own)
            run = _run_of(rows, starts, gw, cy, cx)
            offsets = extents[cy + y0, cx].astype(np.int64)
            top, lft = (cy + y0) * cell, cx * cell
            seed = (top + offsets[:, 0], lft + offsets[:, 1], top + offsets[:, 2] + 1, lft + offsets[:, 3] + 1)
        # Reduce to one box per provisional component of the band, so memory follows components, not pixels.
        local = ids[run] - base
        for out, values, how in ((tops, seed[0], np.minimum), (lefts, seed[1], np.minimum),
                                 (bottoms, seed[2], np.maximum), (rights, seed[3], np.maximum)):
            reduced = np.full(found, -1 if how is np.maximum else np.iinfo(np.int64).max, np.int64)
            how.at(reduced, local, values.astype(np.int64))
            out.append(reduced)
    roots = labeller.finish()
    boxes = np.empty((labeller.count, 4), np.int64)
    for k, (parts, how) in enumerate(((tops, np.minimum), (lefts, np.minimum), (bottoms, np.maximum),
                                      (rights, np.maximum))):
        column = np.concatenate(parts)
        boxes[:, k] = column
        how.at(boxes[:, k], roots, column)
    keep = (roots == np.arange(roots.size)) & (boxes[:, 2] >= 0)
    boxes = boxes[keep]
    return boxes[np.lexsort(boxes.T[::-1])]


def _grow(boxes: np.ndarray, margin: int, min_side: int, height: int, width: int) -> np.ndarray:
    """Pixel boxes grown by ``margin`` and clipped to the image; then any side shorter than
    ``min_side`` grown to it (or to the image's side if that is shorter): around the box's centre,
    the odd pixel below or right, shifted back inside the image where it would cross an edge."""
    grown = np.empty_like(boxes)
    grown[:, 0] = np.maximum(boxes[:, 0] - margin, 0)
    grown[:, 1] = np.maximum(boxes[:, 1] - margin, 0)
    grown[:, 2] = np.minimum(boxes[:, 2] + margin, height)
    grown[:, 3] = np.minimum(boxes[:, 3] + margin, width)
    if min_side > 1:
        for low, high, size in ((0, 2, height), (1, 3, width)):
            need = min(min_side, size)
            extra = need - (grown[:, high] - grown[:, low])
            short = extra > 0
            start = np.clip(grown[short, low] - extra[short] // 2, 0, size - need)
            grown[short, low] = start
            grown[short, high] = start + need
    return grown


def crop_regions(hole: torch.Tensor, margin: int = DEFAULT_CROP_MARGIN, min_side: int = 1) -> np.ndarray:
    """The crop boxes before merging, as an n x 4 int64 array (top, left, bottom, right): each hole
    region's bounding box grown by ``margin``, clipped, and grown to ``min_side`` where shorter.

    Regions whose grown boxes are sure to overlap may already come as one box (their union's box),
    which merging would give anyway; ``hole`` is a boolean H×W tensor."""
    _check_hole(hole)
    height, width = hole.shape
    cell, link = _grouping(int(margin), int(min_side))
    groups = _hole_groups(np.ascontiguousarray(hole.cpu().numpy()), cell, link)
    return _grow(groups, int(margin), int(min_side), height, width)


class GroupingSize(NamedTuple):
    """What the memory of crop_regions follows (see memory.estimate_grouping_bytes)."""

    band_cells: int  # cells of the largest band it labels at once, its window included
    band_runs: int  # an upper bound of the runs it holds for one band
    components: int  # an upper bound of the components it keeps numbers for, all bands together
    grid_cells: int  # cells of the grid of occupied cells it keeps (none when the cells are pixels)


def _row_runs(grid: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per row of a boolean mask: its runs of True, and those of them no run of the row above touches
    (8-connectivity; every run of the first row counts as such)."""
    height, width = grid.shape
    runs = np.zeros(height, np.int64)
    fresh = np.zeros(height, np.int64)
    step = max(1, _BAND_CELLS // width)
    for top in range(0, height, step):
        band = grid[top:top + step]
        rows, starts, ends = _runs(band)
        runs[top:top + band.shape[0]] = np.bincount(rows, minlength=band.shape[0])
        # Pixels of this band's rows with a hole pixel above them or diagonally above: a run holding
        # none of them starts a component (within the rows read so far).
        above = np.zeros((band.shape[0], width + 2), bool)
        above[1:, 1:-1] = band[:-1]
        if top:
            above[0, 1:-1] = grid[top - 1]
        touched = band & (above[:, :-2] | above[:, 1:-1] | above[:, 2:])
        del above
        counts = np.zeros((band.shape[0], width + 1), np.int32)
        np.cumsum(touched, axis=1, out=counts[:, 1:])
        del touched
        alone = counts[rows, ends] == counts[rows, starts]
        fresh[top:top + band.shape[0]] = np.bincount(rows[alone], minlength=band.shape[0])
    fresh[0] = runs[0]
    return runs, fresh


def grouping_size(hole: torch.Tensor, margin: int = DEFAULT_CROP_MARGIN, min_side: int = 1) -> GroupingSize:
    """The sizes crop_regions's memory follows, counted in one pass over the mask without labelling
    (the pass itself holds one band of the mask and its runs).

    A band of crop_regions reads the pixel rows its cells' link squares reach; the pieces of hole
    regions cut to those rows number at most the runs there that no run of the row above touches,
    plus the runs of their first row, and the runs of the linked grid are no more than those of the
    hole pixels read (a run of hole pixels lies in one run of cells)."""
    _check_hole(hole)
    grid = hole.cpu().numpy()
    height, width = grid.shape
    if height == 0 or width == 0:
        return GroupingSize(0, 0, 0)
    cell, link = _grouping(int(margin), int(min_side))
    runs, fresh = _row_runs(grid)
    run_sum = np.concatenate([[0], np.cumsum(runs)])
    fresh_sum = np.concatenate([[0], np.cumsum(fresh)])
    gh, gw = -(-height // cell), -(-width // cell)
    reach = (link - 1) // 2
    band = max(1, _BAND_CELLS // gw)
    y0 = np.arange(0, gh, band)
    y1 = np.minimum(gh, y0 + band)
    # Pixel rows whose cells' squares reach each band, and the rows the band labels.
    w0 = np.clip((y0 + reach - link + 1) * cell, 0, height)
    w1 = np.clip((y1 + reach) * cell, 0, height)
    b0, b1 = np.minimum(y0 * cell, height), np.minimum(y1 * cell, height)
    pieces = fresh_sum[w1] - fresh_sum[w0] + runs[np.minimum(w0, height - 1)] - fresh[np.minimum(w0, height - 1)]
    held = run_sum[w1] - run_sum[w0] + run_sum[b1] - run_sum[b0]
    window = (min(gh, band) + link - 1) * (gw + link - 1)
    reading = min(height, max(1, _BAND_CELLS // (gw * cell * cell)) * cell) * gw * cell if cell > 1 else 0
    return GroupingSize(max(window, reading), int(held.max()), int(pieces.sum()), gh * gw if cell > 1 else 0)


def _check_hole(hole: torch.Tensor) -> None:
    if hole.ndim != 2 or hole.dtype != torch.bool:
        raise ValueError(f"hole must be a boolean HxW tensor, got {hole.dtype} of shape {tuple(hole.shape)}")
