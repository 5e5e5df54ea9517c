"""Crop planning, stage two: boxes that overlap merged into their bounding box until none do.

Rounds merge boxes which overlap.  The first round looks at every box through a raster of the boxes on
their own coordinates (doubled, so that boxes which only touch stay apart) labelled band by band; later
rounds look only at the boxes that grew, and at the boxes that touch them, found through a bucket
index of the boxes that did not change.  A chain of boxes that reach each other only once their
neighbours have merged costs one small round per link.
"""

from __future__ import annotations

import itertools
import math
from typing import List, Optional, Tuple

import numpy as np

from .labels import _BAND_CELLS, _BandLabeller, _compact, _components, _run_of
from .settings import Box

# Up to this many boxes, a round of the merge compares every pair instead of drawing a raster.
_PAIRWISE_BOXES = 1024
# A round with more grown boxes than this looks at every box again (a full round).
_FULL_ROUND_BOXES = 4096
# Boxes that settled since the bucket index was built are compared one by one with the grown ones;
# past this many (or a quarter of the index) the index is rebuilt with them.
_LOOSE_BOXES = 2048


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
