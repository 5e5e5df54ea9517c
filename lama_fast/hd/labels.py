"""Connected components of boolean grids, labelled run by run and, for large grids, band by band.

Components are labelled with _components: hooking of roots onto smaller roots and full path
compression, which takes a few rounds whatever the component's shape.  Both stages of crop planning
(lama_fast.hd.grouping and lama_fast.hd.merging) label with it.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

# Cells per band when a grid is labelled band by band: a band's temporary arrays stay near 100 MB
# even when every other cell starts a run.
_BAND_CELLS = 1 << 20


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
