"""High-resolution strategies: which parts of a large photo the network sees.

``original``
    the whole image, as the original LaMa ``predict.py`` runs it.
``crop``
    when the long side exceeds ``crop_trigger_size``: each connected hole
    region's bounding box, grown by ``crop_margin`` on every side and clipped
    to the image (and grown to the model's smallest side where shorter), boxes
    that overlap merged until none do, each box inpainted at full resolution
    and its hole pixels pasted back.  Images at or below the trigger size run
    whole.  Planning takes time and memory linear in the pixels and the
    regions, however many regions the mask holds.
``resize``
    when the long side exceeds ``resize_limit``: the image is scaled down so
    its long side is ``resize_limit`` (bicubic with antialiasing), inpainted,
    and the result scaled back up (bicubic) for the hole pixels only.

Every strategy changes hole pixels only: the caller keeps the input's pixels
outside the hole bit for bit.
"""

from __future__ import annotations

import itertools
import math
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
# per-pixel boxes are taken; see _grouping().
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


# --- crop planning ------------------------------------------------------------------------------------
#
# A mask can hold millions of hole regions, so nothing below looks at pairs of regions.  Two stages:
#
# 1. Grouping (_hole_groups): the mask is cut into cells; cells close enough that any hole pixels in
#    them have overlapping grown boxes are linked (a dilation of the cell grid), and the linked cells'
#    exact pixel bounding boxes are taken.  It reads the mask in bands of rows, so its memory is a band
#    plus a few numbers per group, and its time is linear in the pixels.
# 2. Merging (_merge_boxes): rounds that merge boxes which overlap.  The first round looks at every box
#    through a raster of the boxes on their own coordinates (doubled, so that boxes which only touch stay
#    apart) labelled band by band; later rounds look only at the boxes that grew, and at the boxes that
#    touch them, found through a bucket index of the boxes that did not change.  A chain of boxes that
#    reach each other only once their neighbours have merged costs one small round per link.
#
# Both stages label components with _components: hooking of roots onto smaller roots and full path
# compression, which takes a few rounds whatever the component's shape.

# Cells per band when a grid is labelled band by band: a band's temporary arrays stay near 100 MB
# even when every other cell starts a run.
_BAND_CELLS = 1 << 20
# Up to this many boxes, a round of the merge compares every pair instead of drawing a raster.
_PAIRWISE_BOXES = 1024
# A round with more grown boxes than this looks at every box again (a full round).
_FULL_ROUND_BOXES = 4096
# Boxes that settled since the bucket index was built are compared one by one with the grown ones;
# past this many (or a quarter of the index) the index is rebuilt with them.
_LOOSE_BOXES = 2048


def _runs(grid: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, first column and end column (exclusive) of every run of True cells, in row-major order."""
    height, width = grid.shape
    # With a False column after each row no run crosses a row end, so the flattened changes
    # alternate between a run's start and its end.
    padded = np.zeros((height, width + 1), bool)
    padded[:, :width] = grid
    flat = padded.reshape(-1)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    del padded, flat
    if height and width and grid[0, 0]:
        change = np.concatenate([[0], change])
    rows = change[0::2] // (width + 1)
    starts = change[0::2] - rows * (width + 1)
    return rows, starts, change[1::2] - rows * (width + 1)


def _touching(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, diagonal: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Pairs (a, b) of runs in consecutive rows (a above b) that share a column, or also meet at a
    corner when ``diagonal``.  Runs are in row-major order; the pairs are linear in the runs."""
    if rows.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    stride = int(ends.max()) + 2
    start_keys = rows * stride + starts
    end_keys = rows * stride + ends
    below = (rows + 1) * stride
    # In a row the runs are disjoint and sorted, so those touching [s, e) of the row above form one slice.
    side = ("left", "right") if diagonal else ("right", "left")
    first = np.searchsorted(end_keys, below + starts, side=side[0])
    last = np.searchsorted(start_keys, below + ends, side=side[1])
    counts = np.maximum(last - first, 0)
    total = int(counts.sum())
    a = np.repeat(np.arange(rows.size), counts)
    b = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(total)
    return a, b


def _components(count: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The root (smallest node) of each node's component in the graph on ``count`` nodes with edges a-b.

    Each round hooks every root that has an edge to a smaller root onto the smallest such root, then
    jumps pointers until every node points at its root.  A root that does not hook has all its
    neighbours hooked onto it or onto smaller roots, so it hooks or has grown by the next round; on
    the shapes that defeat propagating the smallest label along edges (a chain numbered at random,
    a spiral, a comb reached from its spine: up to n/2 rounds of that) this takes at most a dozen
    rounds for 200000 nodes (bench/results/crop_plan.md)."""
    parent = np.arange(count, dtype=np.int64)
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    while a.size:
        ra, rb = parent[a], parent[b]
        live = ra != rb
        if not live.all():
            a, b, ra, rb = a[live], b[live], ra[live], rb[live]
            if not a.size:
                break
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


def _compact(roots: np.ndarray) -> Tuple[np.ndarray, int]:
    """Labels 0..k-1 in order of first root from roots that point at their component's smallest node."""
    is_root = roots == np.arange(roots.size)
    number = np.cumsum(is_root) - 1
    return number[roots], int(is_root.sum())


class _BandLabeller:
    """Connected components of a boolean grid that arrives in bands of rows, top to bottom.

    ``add`` labels a band's runs with provisional component numbers and remembers which numbers meet
    across the band's upper edge; ``finish`` joins them.  Only the last row of the previous band is kept."""

    def __init__(self, diagonal: bool) -> None:
        self.diagonal = diagonal
        self.count = 0
        self._joins: List[Tuple[np.ndarray, np.ndarray]] = []
        self._tail: Optional[Tuple[int, np.ndarray, np.ndarray, np.ndarray]] = None

    def add(self, top: int, grid: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows (within the band), starts, ends and provisional component numbers of the band's runs."""
        rows, starts, ends = _runs(grid)
        local, found = _compact(_components(rows.size, *_touching(rows, starts, ends, self.diagonal)))
        ids = local + self.count
        self.count += found
        head = int(np.searchsorted(rows, 1))
        if self._tail is not None and self._tail[0] == top - 1 and head and self._tail[1].size:
            _, tail_starts, tail_ends, tail_ids = self._tail
            pair_rows = np.concatenate([np.zeros(tail_starts.size, np.int64), np.ones(head, np.int64)])
            a, b = _touching(pair_rows, np.concatenate([tail_starts, starts[:head]]),
                             np.concatenate([tail_ends, ends[:head]]), self.diagonal)
            both = np.concatenate([tail_ids, ids[:head]])
            self._joins.append((both[a], both[b]))
        last = int(np.searchsorted(rows, grid.shape[0] - 1))
        self._tail = (top + grid.shape[0] - 1, starts[last:], ends[last:], ids[last:])
        return rows, starts, ends, ids

    def finish(self) -> np.ndarray:
        """For each provisional number, the smallest provisional number of its whole component."""
        if self._joins:
            a = np.concatenate([pair[0] for pair in self._joins])
            b = np.concatenate([pair[1] for pair in self._joins])
        else:
            a = b = np.empty(0, np.int64)
        return _components(self.count, a, b)


def _run_of(rows: np.ndarray, starts: np.ndarray, width: int, cell_rows: np.ndarray,
            cell_cols: np.ndarray) -> np.ndarray:
    """Index of the run (row-major runs of a band) that holds each given cell of the band."""
    stride = width + 1
    return np.searchsorted(rows * stride + starts, cell_rows * stride + cell_cols, side="right") - 1


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


def _pairwise_components(t: np.ndarray, l: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Component labels of a few boxes by comparing all pairs (in slices, so memory stays small).

    Each box is joined to the first and the last box it overlaps, which is not the whole overlap
    graph: two overlapping boxes can end in different groups.  The merge loop only needs every group
    to be a union of overlapping boxes and every box that overlaps something to be in a group of
    two or more; overlaps left between groups are found in the next round."""
    k = t.size
    step = max(1, (1 << 22) // k)
    a_parts, b_parts = [], []
    for i0 in range(0, k, step):
        i1 = min(k, i0 + step)
        rows = slice(i0, i1)
        hit = ((t[rows, None] < b[None, :]) & (t[None, :] < b[rows, None])
               & (l[rows, None] < r[None, :]) & (l[None, :] < r[rows, None]))
        hit[np.arange(i1 - i0), np.arange(i0, i1)] = False
        has = hit.any(axis=1)
        own = np.arange(i0, i1)[has]
        a_parts += [own, own]
        b_parts += [hit[has].argmax(axis=1), k - 1 - hit[has][:, ::-1].argmax(axis=1)]
    return _compact(_components(k, np.concatenate(a_parts), np.concatenate(b_parts)))[0]


def _raster_components(t: np.ndarray, l: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Component labels of the overlap graph of boxes, exactly, in time linear in the boxes and the
    raster of their coordinates.

    Every distinct edge coordinate becomes a grid line; a box covering cells [T, B) x [L, R) of that
    grid is drawn as the closed rectangle [2T, 2B - 2] x [2L, 2R - 2] of a grid of twice the
    resolution, where boxes that overlap share a cell and boxes that only touch keep an empty line
    between them.  The 4-connected components of the drawing are then the overlap components.  The
    drawing is made band by band from a difference array, and labelled band by band."""
    k = t.size
    ys, index = np.unique(np.concatenate([t, b]), return_inverse=True)
    rows = 2 * ys.size - 3
    top = (2 * index[:k]).astype(np.int32)
    bottom = (2 * index[k:] - 1).astype(np.int32)  # the first row below the box
    xs, index = np.unique(np.concatenate([l, r]), return_inverse=True)
    cols = 2 * xs.size - 3
    left = (2 * index[:k]).astype(np.int32)
    right = (2 * index[k:] - 1).astype(np.int32)  # the first column right of the box
    del index
    # A box adds +1 at its top-left and bottom-right corners and -1 at the other two: the running sums
    # over rows and then columns count the boxes over each cell.
    by_top = np.argsort(top, kind="stable")
    by_bottom = np.argsort(bottom, kind="stable")
    sorted_tops, sorted_bottoms = top[by_top], bottom[by_bottom]
    seed_ids = np.empty(k, np.int64)
    labeller = _BandLabeller(diagonal=False)
    band = max(1, _BAND_CELLS // (cols + 1))
    carry = np.zeros(cols + 1, np.int32)
    for y0 in range(0, rows, band):
        y1 = min(rows, y0 + band)
        diff = np.zeros((y1 - y0, cols + 1), np.int32)
        s0, s1 = np.searchsorted(sorted_tops, [y0, y1])
        starting = by_top[s0:s1]
        e0, e1 = np.searchsorted(sorted_bottoms, [y0, y1])
        ending = by_bottom[e0:e1]
        for boxes, sign in ((starting, 1), (ending, -1)):
            at = (top if sign > 0 else bottom)[boxes] - y0
            np.add.at(diff, (at, left[boxes]), sign)
            np.add.at(diff, (at, right[boxes]), -sign)
        diff[0] += carry
        np.cumsum(diff, axis=0, out=diff)
        carry = diff[-1].copy()
        np.cumsum(diff, axis=1, out=diff)
        drawn = diff[:, :cols] > 0
        del diff
        run_rows, run_starts, _, ids = labeller.add(y0, drawn)
        seed_ids[starting] = ids[_run_of(run_rows, run_starts, cols, top[starting] - y0, left[starting])]
    return _compact(labeller.finish())[0][seed_ids]


def _box_components(t: np.ndarray, l: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Labels of groups of overlapping boxes (see _pairwise_components for what a group may leave out)."""
    k = t.size
    if k <= _PAIRWISE_BOXES:
        return _pairwise_components(t, l, b, r)
    if k <= 8 * _PAIRWISE_BOXES:
        # Pairs cost k^2, the raster about 4 cells per pair of distinct coordinates: take the cheaper.
        ny = np.unique(np.concatenate([t, b])).size
        nx = np.unique(np.concatenate([l, r])).size
        if k * k <= 4 * ny * nx:
            return _pairwise_components(t, l, b, r)
    return _raster_components(t, l, b, r)


def _expand(y0: np.ndarray, y1: np.ndarray, x0: np.ndarray, x1: np.ndarray,
            columns: int) -> Tuple[np.ndarray, np.ndarray]:
    """(owner, cell) for every cell of inclusive cell rectangles [y0, y1] x [x0, x1] on a grid ``columns`` wide."""
    heights = np.maximum(y1 - y0 + 1, 0)
    widths = np.maximum(x1 - x0 + 1, 0)
    counts = heights * widths
    total = int(counts.sum())
    owner = np.repeat(np.arange(counts.size), counts)
    offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    w = widths[owner]
    return owner, (y0[owner] + offset // w) * columns + x0[owner] + offset % w


class _BucketIndex:
    """Boxes that do not overlap one another, by the square buckets of the image they touch.

    Disjoint boxes touch about as many buckets as the image has, plus their number, plus their
    perimeters in buckets, so the index stays linear in the boxes and the pixels."""

    def __init__(self, ids: np.ndarray, t, l, b, r, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.side = max(1, math.isqrt(max(1, height * width // max(1, ids.size))))
        self.rows, self.cols = -(-height // self.side), -(-width // self.side)
        s = self.side
        owner, cell = _expand(t[ids] // s, (b[ids] - 1) // s, l[ids] // s, (r[ids] - 1) // s, self.cols)
        order = np.argsort(cell, kind="stable")
        self.members = ids[owner[order]]
        self.starts = np.searchsorted(cell[order], np.arange(self.rows * self.cols + 1))
        self.size = ids.size

    def _inner(self, t, l, b, r):
        """Inclusive bucket ranges lying wholly inside boxes (empty where first > last)."""
        s = self.side
        y0, x0 = -(-t // s), -(-l // s)
        y1 = np.where(b >= self.height, self.rows - 1, b // s - 1)
        x1 = np.where(r >= self.width, self.cols - 1, r // s - 1)
        return y0, y1, x0, x1

    def overlapping(self, query: np.ndarray, known: np.ndarray, t, l, b, r) -> np.ndarray:
        """Ids of indexed boxes that overlap a query box.  Buckets wholly inside a query's ``known``
        box (a box inside the query whose overlapping indexed boxes are already merged with it, or -1)
        are skipped: along a chain of growing boxes each bucket is read about once."""
        s = self.side
        qy0, qy1, qx0, qx1 = t[query] // s, (b[query] - 1) // s, l[query] // s, (r[query] - 1) // s
        has = known >= 0
        k = np.where(has, known, 0)
        ky0, ky1, kx0, kx1 = self._inner(t[k], l[k], b[k], r[k])
        has &= (ky0 <= ky1) & (kx0 <= kx1)
        # Without a known box: the query's whole range; with one: the four pieces around its inside.
        ky0, ky1 = np.where(has, ky0, qy1 + 1), np.where(has, ky1, qy1)
        kx0, kx1 = np.where(has, kx0, qx0), np.where(has, kx1, qx1)
        pieces = (
            (qy0, ky0 - 1, qx0, qx1),         # above the inside (everything when there is none)
            (ky1 + 1, qy1, qx0, qx1),         # below it
            (ky0, ky1, qx0, np.where(has, kx0 - 1, qx0 - 1)),  # left of it
            (ky0, ky1, np.where(has, kx1 + 1, qx1 + 1), qx1),  # right of it
        )
        owners, cells = [], []
        for y0, y1, x0, x1 in pieces:
            owner, cell = _expand(y0, y1, x0, x1, self.cols)
            owners.append(owner)
            cells.append(cell)
        owner = np.concatenate(owners)
        cell = np.concatenate(cells)
        counts = self.starts[cell + 1] - self.starts[cell]
        total = int(counts.sum())
        pair_owner = np.repeat(owner, counts)
        slot = np.repeat(self.starts[cell] - np.cumsum(counts) + counts, counts) + np.arange(total)
        found = self.members[slot]
        q = query[pair_owner]
        hit = (t[found] < b[q]) & (t[q] < b[found]) & (l[found] < r[q]) & (l[q] < r[found])
        return np.unique(found[hit])


def _overlapping_any(query: np.ndarray, others: np.ndarray, t, l, b, r) -> np.ndarray:
    """The ``others`` that overlap at least one ``query`` box (compared pair by pair)."""
    if not query.size or not others.size:
        return np.empty(0, np.int64)
    hit = np.zeros(others.size, bool)
    step = max(1, (1 << 22) // others.size)
    for i0 in range(0, query.size, step):
        q = query[i0:i0 + step, None]
        hit |= ((t[others] < b[q]) & (t[q] < b[others]) & (l[others] < r[q]) & (l[q] < r[others])).any(axis=0)
    return others[hit]


def _merge_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boxes (n x 4) with overlapping ones merged into their bounding box until none overlap; sorted.

    Invariant between rounds: boxes that did not grow in the last round overlap no other such box,
    so a round need only look at the grown boxes and what touches them."""
    n = len(boxes)
    if n <= 1:
        return np.asarray(boxes, np.int64).reshape(-1, 4)
    capacity = 2 * n
    t, l, b, r = (np.zeros(capacity, np.int64) for _ in range(4))
    t[:n], l[:n], b[:n], r[:n] = np.asarray(boxes, np.int64).T
    alive = np.zeros(capacity, bool)
    alive[:n] = True
    pending = alive.copy()
    known = np.full(capacity, -1, np.int64)
    used = n
    grown = np.arange(n)
    index: Optional[_BucketIndex] = None
    loose = np.empty(0, np.int64)  # alive boxes outside the index
    while grown.size:
        full = index is None or grown.size > _FULL_ROUND_BOXES
        if full:
            look = np.flatnonzero(alive[:used])
        else:
            settled = loose[alive[loose] & ~pending[loose]]
            hits = index.overlapping(grown, known[grown], t, l, b, r)
            hits = hits[alive[hits]]
            near = _overlapping_any(grown, settled, t, l, b, r)
            look = np.unique(np.concatenate([grown, hits, near]))
        labels = _box_components(t[look], l[look], b[look], r[look])
        pending[look] = False
        sizes = np.bincount(labels)
        joined = sizes[labels] >= 2
        if not joined.any():
            break
        members, groups = look[joined], labels[joined]
        alive[members] = False
        number, group = np.unique(groups, return_inverse=True)
        count = number.size
        new = np.arange(used, used + count)
        for array, how, fill in ((t, np.minimum, np.iinfo(np.int64).max), (l, np.minimum, np.iinfo(np.int64).max),
                                 (b, np.maximum, -1), (r, np.maximum, -1)):
            values = np.full(count, fill, np.int64)
            how.at(values, group, array[members])
            array[new] = values
        # Each new box remembers its largest member: whatever indexed box overlapped it is merged now.
        area = (b[members] - t[members]) * (r[members] - l[members])
        order = np.lexsort((-area, group))
        known[new] = members[order[np.searchsorted(group[order], np.arange(count))]]
        alive[new] = True
        pending[new] = True
        used += count
        grown = new
        loose = np.concatenate([loose[alive[loose]], new])
        if full or loose.size > max(_LOOSE_BOXES, index.size // 4):
            index = _BucketIndex(np.flatnonzero(alive[:used] & ~pending[:used]), t, l, b, r, height, width)
            loose = new
    keep = np.flatnonzero(alive[:used])
    merged = np.stack([t[keep], l[keep], b[keep], r[keep]], axis=1)
    return merged[np.lexsort(merged.T[::-1])]


def merge_crops(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop boxes (n x 4 int64, from crop_regions) with overlapping ones merged into their bounding
    box, repeatedly, until none overlap; sorted by top, left, bottom, right."""
    return _merge_boxes(np.asarray(boxes, np.int64).reshape(-1, 4), int(height), int(width))


def as_boxes(boxes: np.ndarray) -> List[Box]:
    """Box tuples of the rows of an n x 4 array."""
    # Columns zipped into tuples and tuple.__new__ skip the per-row lists and the keyword handling of
    # Box(...): a third of the time for a million boxes; slices keep the intermediate lists small.
    rows = np.asarray(boxes, np.int64).reshape(-1, 4)
    out: List[Box] = []
    for start in range(0, len(rows), 1 << 16):
        out.extend(map(tuple.__new__, itertools.repeat(Box), zip(*rows[start:start + (1 << 16)].T.tolist())))
    return out


def plan_crops(hole: torch.Tensor, margin: int = DEFAULT_CROP_MARGIN, min_side: int = 1) -> List[Box]:
    """The boxes the ``crop`` strategy inpaints: each hole region's bounding box grown by ``margin``
    on every side, clipped to the image, grown to ``min_side`` where shorter (see crop_regions),
    overlapping boxes merged until none overlap.

    Every hole pixel lies in exactly one box, and each box holds whole hole regions.  Time and memory
    are linear in the pixels and the regions (see the comment above _BAND_CELLS)."""
    height, width = hole.shape
    return as_boxes(merge_crops(crop_regions(hole, margin, min_side), height, width))


def uses_crop(settings: HDSettings, height: int, width: int) -> bool:
    return settings.strategy == "crop" and max(height, width) > settings.crop_trigger_size


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


# Plan.describe() names this many boxes, then counts the rest.
_DESCRIBED_BOXES = 50


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
            shown = [f"{b.width}x{b.height}+{b.left}+{b.top}" for b in self.boxes[:_DESCRIBED_BOXES]]
            if len(self.boxes) > _DESCRIBED_BOXES:
                shown.append(f"... ({len(self.boxes) - _DESCRIBED_BOXES} more)")
            what = f"crop: {len(self.boxes)} region(s) " + ", ".join(shown)
        elif self.strategy == "resize" and self.run_size is not None:
            what = f"resize: the network runs at {self.run_size[1]}x{self.run_size[0]}"
        else:
            what = f"{self.strategy}: the whole {width}x{height} image"
        return "; ".join([what] + self.notes)
