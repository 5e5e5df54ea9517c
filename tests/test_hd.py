"""High-resolution strategies and the memory guard: the crop planner against a plain statement of
the rule, each strategy on a 3000x2000 photo, and the guard's switch and error."""

from __future__ import annotations

import re
import warnings
from collections import deque

import numpy as np
import pytest
import torch

from configs import TINY_CONFIG
from lama_fast import Inpainter, hd, memory, optimize
from lama_fast.hd import make_plan
from lama_fast.model.random import random_generator


def _reference_grow(low: int, high: int, need: int, size: int):
    """A side grown to ``need`` (at most ``size``) around its centre, the odd pixel after, kept inside."""
    need = min(need, size)
    if high - low >= need:
        return low, high
    start = min(max(low - (need - (high - low)) // 2, 0), size - need)
    return start, start + need


def _reference_crops(hole: np.ndarray, margin: int, min_side: int = 1):
    """The crop rule stated directly: 8-connected regions by breadth-first search, bounding
    boxes grown by the margin and clipped, sides shorter than min_side grown to it, boxes that
    overlap merged until none do."""
    height, width = hole.shape
    seen = np.zeros_like(hole, dtype=bool)
    boxes = []
    for y, x in zip(*np.nonzero(hole)):
        if seen[y, x]:
            continue
        seen[y, x] = True
        queue, top, left, bottom, right = deque([(y, x)]), y, x, y, x
        while queue:
            cy, cx = queue.popleft()
            top, left, bottom, right = min(top, cy), min(left, cx), max(bottom, cy), max(right, cx)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = cy + dy, cx + dx
                    if 0 <= ny < height and 0 <= nx < width and hole[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        top, bottom = _reference_grow(max(0, top - margin), min(height, bottom + 1 + margin), min_side, height)
        left, right = _reference_grow(max(0, left - margin), min(width, right + 1 + margin), min_side, width)
        boxes.append([top, left, bottom, right])
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    boxes[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return sorted(tuple(int(v) for v in b) for b in boxes)


@pytest.mark.parametrize("margin", [0, 1, 2, 3, 5, 8, 40])
@pytest.mark.parametrize("seed", range(6))
def test_crop_boxes_follow_the_stated_rule(margin, seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(20, 90, size=2)
    density = [0.002, 0.01, 0.03, 0.2, 0.6, 0.02][seed]
    hole = rng.random((height, width)) < density
    if seed == 5:  # a ring around an island and a long diagonal line
        hole[:] = False
        hole[5:15, 5:15] = True
        hole[7:13, 7:13] = False
        hole[10, 10] = True
        for k in range(min(height, width) - 2):
            hole[k, k] = True
    got = [tuple(b) for b in hd.plan_crops(torch.from_numpy(hole), margin)]
    assert got == _reference_crops(hole, margin)
    # Every hole pixel in exactly one box.
    cover = np.zeros((height, width), int)
    for top, left, bottom, right in got:
        cover[top:bottom, left:right] += 1
    assert (cover[hole] == 1).all()


def _random_mask(rng, kind: int, height: int, width: int) -> np.ndarray:
    """Small hostile masks: noise, dots on a grid, bars, Ls with a dot in their corner (boxes that
    meet only once their neighbours have merged), and a checkerboard."""
    if kind == 0:
        return rng.random((height, width)) < rng.choice([0.01, 0.05, 0.2, 0.5])
    hole = np.zeros((height, width), bool)
    if kind == 1:
        step = int(rng.integers(2, 6))
        hole[int(rng.integers(0, step))::step, int(rng.integers(0, step))::step] = True
    elif kind == 2:
        for _ in range(int(rng.integers(1, 14))):
            y, x = rng.integers(0, height), rng.integers(0, width)
            hole[y:y + rng.integers(1, 12), x:x + rng.integers(1, 3)] = True
            y, x = rng.integers(0, height), rng.integers(0, width)
            hole[y:y + rng.integers(1, 3), x:x + rng.integers(1, 12)] = True
    elif kind == 3:
        for _ in range(int(rng.integers(1, 10))):
            y, x, arm = rng.integers(0, height), rng.integers(0, width), int(rng.integers(2, 15))
            hole[y, x:x + arm] = True
            hole[y:y + arm, x] = True
            hole[min(height - 1, y + arm - 1), min(width - 1, x + arm - 1)] = True
    else:
        hole[::2, ::2] = True
        hole[1::2, 1::2] = rng.random() < 0.5
    return hole


@pytest.mark.parametrize("paths", ["as shipped", "every path"])
def test_crop_boxes_follow_the_stated_rule_on_many_small_masks(paths, monkeypatch):
    """Hundreds of masks of many small regions, margins 0 and 1 most often, min_side 1 and more:
    the boxes equal the reference's.  "every path" shrinks the thresholds so that small masks go
    through the raster, the bucket index, the rebuilt index and bands of one row too."""
    rng = np.random.default_rng(11 if paths == "as shipped" else 12)
    for case in range(220):
        if paths == "every path":
            monkeypatch.setattr(hd.merging, "_PAIRWISE_BOXES", int(rng.choice([0, 2])))
            monkeypatch.setattr(hd.merging, "_FULL_ROUND_BOXES", int(rng.choice([0, 1, 3])))
            monkeypatch.setattr(hd.merging, "_LOOSE_BOXES", int(rng.choice([0, 1, 5])))
            band_cells = int(rng.choice([1, 7, 64]))
            for module in (hd.grouping, hd.merging):  # the two stages, which label band by band
                monkeypatch.setattr(module, "_BAND_CELLS", band_cells)
        height, width = (int(v) for v in rng.integers(1, 48, size=2))
        hole = _random_mask(rng, case % 5, height, width)
        margin = int(rng.choice([0, 0, 1, 1, 2, 3, 6, 40]))
        min_side = int(rng.choice([1, 1, 2, 5, 9]))
        got = [tuple(b) for b in hd.plan_crops(torch.from_numpy(hole), margin, min_side)]
        assert got == _reference_crops(hole, margin, min_side), (case, height, width, margin, min_side)
        cover = np.zeros((height, width), int)
        for top, left, bottom, right in got:
            cover[top:bottom, left:right] += 1
            assert min(bottom - top, height) >= min(min_side, height) and right - left >= min(min_side, width)
        assert (cover[hole] == 1).all()


def test_crop_boxes_follow_the_stated_rule_with_large_margins():
    """Margins from 33 to 300 group pixels on cells of 32 linked up to 17 cells apart before merging."""
    rng = np.random.default_rng(5)
    for case in range(40):
        height, width = (int(v) for v in rng.integers(60, 320, size=2))
        hole = np.zeros((height, width), bool)
        for _ in range(int(rng.integers(1, 25))):
            y, x = rng.integers(0, height), rng.integers(0, width)
            hole[y:y + rng.integers(1, 20), x:x + rng.integers(1, 20)] = True
        hole |= rng.random((height, width)) < 0.0004
        margin = int(rng.choice([33, 48, 64, 100, 128, 300]))
        min_side = int(rng.choice([1, 9]))
        got = [tuple(b) for b in hd.plan_crops(torch.from_numpy(hole), margin, min_side)]
        assert got == _reference_crops(hole, margin, min_side), (case, height, width, margin, min_side)


def _cascade(height: int, width: int, bar: int = 4) -> np.ndarray:
    """Bars of one pixel's width for margin 1, each put where its box overlaps the bounding box of
    the boxes before it and none of them (its pixels 3 or more from theirs): one round per bar."""
    hole = np.zeros((height, width), bool)
    boxes = np.zeros_like(hole)
    near = np.zeros_like(hole)

    def add(y0, y1, x0, x1):
        hole[y0:y1, x0:x1] = True
        boxes[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = True
        near[max(0, y0 - 2):y1 + 2, max(0, x0 - 2):x1 + 2] = True

    cy, cx = height // 2, width // 2
    add(cy, cy + 1, cx, cx + bar)  # an L of two bars 2 apart: their merged box has room inside
    add(cy + 2, cy + 2 + bar, cx - 2, cx - 1)
    top, bottom, left, right = cy - 1, cy + 3 + bar, cx - 3, cx + bar + 1
    placed = True
    while placed:
        placed = False
        for spot in ([(bottom, bottom + bar, x, x + 1) for x in range(left + 1, right - 1)]
                     + [(y, y + 1, right, right + bar) for y in range(top + 1, bottom - 1)]
                     + [(top - bar, top, x, x + 1) for x in range(left + 1, right - 1)]
                     + [(y, y + 1, left - bar, left) for y in range(top + 1, bottom - 1)]):
            y0, y1, x0, x1 = spot
            if y0 >= 1 and x0 >= 1 and y1 < height and x1 < width and not boxes[y0 - 1:y1 + 1, x0 - 1:x1 + 1].any() \
                    and not near[y0:y1, x0:x1].any():
                add(*spot)
                top, bottom, left, right = min(top, y0 - 1), max(bottom, y1 + 1), min(left, x0 - 1), max(right, x1 + 1)
                placed = True
                break
    return hole


def test_a_cascade_merges_one_box_per_round_to_the_end():
    """Each bar's box meets the others' only once those before it have merged."""
    hole = _cascade(70, 90)
    regions = hd.crop_regions(torch.from_numpy(hole), 1)
    assert len(regions) > 20
    whole = (*regions[:, :2].min(axis=0).tolist(), *regions[:, 2:].max(axis=0).tolist())
    assert [tuple(b) for b in hd.plan_crops(torch.from_numpy(hole), 1)] == _reference_crops(hole, 1) == [whole]
    # A cascade indeed: but for the first L (one region) and the two bars beside it, no region's box
    # overlaps another's, yet all end in one box.
    top, left, bottom, right = regions.T
    overlap = ((top[:, None] < bottom) & (top < bottom[:, None]) & (left[:, None] < right) & (left < right[:, None]))
    assert (overlap.sum(axis=1) == 1).sum() >= len(regions) - 3


def test_min_side_grows_short_boxes_around_their_centre_and_inside_the_image():
    hole = torch.zeros(100, 120, dtype=torch.bool)
    hole[50, 60] = True   # in the middle: 9 x 9 around it
    hole[0, 0] = True     # in a corner: shifted inside
    hole[99, 10:14] = True  # at the bottom, 4 wide: 9 x 9, the odd pixel after the centre
    boxes = hd.plan_crops(hole, 0, min_side=9)
    assert boxes == [hd.Box(0, 0, 9, 9), hd.Box(46, 56, 55, 65), hd.Box(91, 8, 100, 17)]
    assert hd.plan_crops(hole, 0) == [hd.Box(0, 0, 1, 1), hd.Box(50, 60, 51, 61), hd.Box(99, 10, 100, 14)]
    # Two pixels 6 apart: their boxes overlap once grown to 9, and merge.
    two = torch.zeros(40, 40, dtype=torch.bool)
    two[20, 10] = two[20, 16] = True
    assert hd.plan_crops(two, 0, min_side=9) == [hd.Box(16, 6, 25, 21)]
    assert hd.plan_crops(two, 0, min_side=6) == [hd.Box(18, 8, 24, 14), hd.Box(18, 14, 24, 20)]
    # An image thinner than min_side: the box takes the whole side, never more.
    thin = torch.zeros(5, 50, dtype=torch.bool)
    thin[2, 25] = True
    assert hd.plan_crops(thin, 1, min_side=9) == [hd.Box(0, 21, 5, 30)]


def test_resize_keeps_the_short_side_at_min_side():
    settings = hd.HDSettings("resize", resize_limit=1280)
    assert hd.resized_size(settings, 2000, 3000, min_side=9) == hd.resized_size(settings, 2000, 3000) == (853, 1280)
    # 100 x 20000 would run at 6 x 1280: the short side stays at 9 and the long one follows the ratio.
    assert hd.resized_size(settings, 100, 20000) == (6, 1280)
    assert hd.resized_size(settings, 100, 20000, min_side=9) == (9, 1800)
    assert hd.resized_size(settings, 20000, 100, min_side=9) == (1800, 9)
    # A short side already below min_side is not scaled down (nor is anything else).
    assert hd.resized_size(settings, 5, 20000, min_side=9) is None
    assert hd.resized_size(settings, 5, 20000) == (1, 1280)
    hole = torch.zeros(100, 20000, dtype=torch.bool)
    hole[40:60, 100:200] = True
    plan = make_plan(settings, (100, 20000), hole, "reference", torch.float32, None, min_side=9)
    assert plan.strategy == "resize" and plan.run_size == (9, 1800)
    plan = make_plan(hd.HDSettings("crop", crop_margin=0, crop_trigger_size=0), (100, 20000), hole, "reference",
                     torch.float32, None, min_side=25)
    assert plan.boxes == [hd.Box(38, 100, 63, 200)]


def test_planning_that_would_not_fit_fails_with_its_numbers_before_it_runs():
    hole = torch.zeros(600, 900, dtype=torch.bool)
    hole[::3, ::3] = True  # 60000 regions at margin 1
    settings = hd.HDSettings("crop", crop_margin=1, crop_trigger_size=0)
    counts = hd.grouping_size(hole, 1)
    assert counts.components >= 60000
    grouping = memory.estimate_grouping_bytes(*counts)
    with pytest.raises(memory.InsufficientMemoryError) as info:
        make_plan(settings, (600, 900), hole, "reference", torch.float32, grouping - 1, explicit_budget=True)
    assert str(info.value) == (
        f"finding the hole regions (up to {counts.components} of them) of the 900x600 mask needs about "
        f"{memory.format_bytes(grouping)}, more than the {memory.format_bytes(grouping - 1)} of max_memory. Use a "
        f"larger crop_margin (hole regions closer than twice the margin are grouped first), hd_strategy='resize', "
        f"or raise max_memory if the machine has the memory.")
    merging = memory.estimate_merging_bytes(60000)
    assert merging > grouping
    with pytest.raises(memory.InsufficientMemoryError, match=re.escape(
            f"merging the 60000 crop boxes of the 900x600 mask needs about {memory.format_bytes(merging)}, more "
            f"than the {memory.format_bytes(merging - 1)} of available memory. Use a larger crop_margin")):
        make_plan(settings, (600, 900), hole, "reference", torch.float32, merging - 1)
    # With room for both, the run's own estimate is what is checked next.
    plan = make_plan(settings, (600, 900), hole, "reference", torch.float32, merging)
    assert len(plan.boxes) == 60000 and plan.peak_bytes == memory.estimate_peak_bytes("reference", torch.float32, 3, 3)
    # The original strategy falls back on crops only after planning them under the same check.
    with pytest.raises(memory.InsufficientMemoryError, match="^finding the hole regions"):
        make_plan(hd.HDSettings("original", crop_margin=1), (600, 900), hole, "reference", torch.float32, grouping - 1)


def label_cells(cells: torch.Tensor) -> torch.Tensor:
    """8-connected component labels of a boolean grid (True cells get a label >= 0, others -1)."""
    grid = np.ascontiguousarray(cells.numpy())
    rows, starts, ends = hd._runs(grid)
    labels, _ = hd._compact(hd._components(rows.size, *hd._touching(rows, starts, ends, True)))
    out = np.full(grid.shape, -1, np.int64)
    lengths = ends - starts
    first = rows * grid.shape[1] + starts
    position = np.repeat(first - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    out.reshape(-1)[position] = np.repeat(labels, lengths)
    return torch.from_numpy(out)


def test_labels_take_few_rounds_on_snakes_combs_and_shuffled_chains():
    """Shapes on which propagating the smallest label moves it one step per round: a spiral path,
    a comb reached from its spine, a chain whose nodes are numbered at random.  The labels are
    right, and the chain of 200000 nodes would take some 60000 rounds of the old propagation."""
    spiral = np.zeros((301, 303), bool)
    for ring in range(76):
        t, l, b, r = 2 * ring, 2 * ring, 300 - 2 * ring, 302 - 2 * ring
        spiral[t, max(0, l - 2):r + 1] = spiral[t:b + 1, r] = spiral[b, l:r + 1] = spiral[t + 2:b + 1, l] = True
    comb = np.zeros((301, 303), bool)
    comb[-1] = comb[:, ::2] = True
    for grid in (spiral, comb):
        labels = label_cells(torch.from_numpy(grid)).numpy()
        assert labels[grid].min() == 0 and labels[grid].max() == 0 and (labels[~grid] == -1).all()
    order = np.random.default_rng(0).permutation(200000)
    roots = hd._components(200000, order[:-1], order[1:])
    assert (roots == 0).all()
    # Two chains stay two components.
    roots = hd._components(200000, np.concatenate([order[:99999], order[100000:-1]]),
                           np.concatenate([order[1:100000], order[100001:]]))
    assert np.unique(roots).size == 2


def test_far_apart_regions_get_their_own_boxes_and_near_ones_one():
    hole = torch.zeros(1000, 1200, dtype=torch.bool)
    hole[100:150, 100:180] = True        # region A
    hole[700:760, 900:1000] = True       # region B, far from A
    hole[150 + 200:360, 100:110] = True  # region C: 200 px below A, boxes grown by 128 overlap
    boxes = hd.plan_crops(hole, 128)
    assert boxes == [hd.Box(0, 0, 360 + 128, 180 + 128), hd.Box(700 - 128, 900 - 128, 760 + 128, 1000 + 128)]
    assert hd.plan_crops(hole, 0) == [hd.Box(100, 100, 150, 180), hd.Box(350, 100, 360, 110), hd.Box(700, 900, 760, 1000)]
    assert hd.plan_crops(torch.zeros(5, 5, dtype=torch.bool), 128) == []


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match=re.escape("hd_strategy must be one of original, crop, resize; got 'tile'")):
        hd.HDSettings("tile")
    with pytest.raises(ValueError, match=re.escape("crop_margin must be >= 0, got -1")):
        hd.HDSettings(crop_margin=-1)
    with pytest.raises(ValueError, match=re.escape("resize_limit must be >= 8, got 4")):
        hd.HDSettings(resize_limit=4)
    with pytest.raises(TypeError, match=re.escape("crop_trigger_size must be an integer, got float")):
        hd.HDSettings(crop_trigger_size=800.0)


# --- the three strategies on a large photo ----------------------------------------------------------

HEIGHT, WIDTH = 2000, 3000


@pytest.fixture(scope="module")
def photo():
    """A 3000x2000 photo-like image (smooth gradients plus texture) and a mask of two holes,
    2 % of the area in all: a disc and a rectangle far from it."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    base = np.stack([xx / WIDTH, yy / HEIGHT, 0.5 + 0.5 * np.sin(xx / 97 + yy / 53)], axis=-1)
    image = np.clip(base * 200 + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[(yy - 600) ** 2 + (xx - 800) ** 2 < 170 ** 2] = 255         # ~90.8k px
    mask[1400:1550, 2100:2300] = 255                                  # 30k px
    assert 0.018 < (mask > 0).mean() < 0.022
    return image, mask


@pytest.fixture(scope="module")
def inpainter():
    return Inpainter(optimize(random_generator(TINY_CONFIG, seed=0), backend="reference"))


def test_crop_keeps_every_outside_pixel_and_equals_direct_runs_on_its_boxes(photo, inpainter):
    image, mask = photo
    result = inpainter(image, mask, hd_strategy="crop")
    hole = mask > 0
    np.testing.assert_array_equal(result[~hole], image[~hole])
    plan = inpainter.plan((HEIGHT, WIDTH), torch.from_numpy(hole), "crop")
    assert plan.strategy == "crop"
    assert plan.boxes == [hd.Box(431 - 128, 631 - 128, 770 + 128, 970 + 128), hd.Box(1400 - 128, 2100 - 128, 1550 + 128, 2300 + 128)]
    changed = 0
    for box in plan.boxes:
        rows, cols = box.slices()
        direct = inpainter(image[rows, cols], mask[rows, cols], hd_strategy="original")
        np.testing.assert_array_equal(result[rows, cols], direct)
        changed += int((direct != image[rows, cols]).any(axis=-1).sum())
    assert changed > 0.9 * hole.sum()  # the holes really were filled


def test_original_runs_the_whole_image(photo, inpainter):
    image, mask = photo
    small_image, small_mask = image[:600, :900], mask[:600, :900]
    result = inpainter(small_image, small_mask, hd_strategy="original")
    images = torch.from_numpy(small_image).permute(2, 0, 1)[None].float() / 255
    whole = inpainter.inpaint_batch(images, torch.from_numpy(small_mask)[None, None])
    expected = (whole[0].permute(1, 2, 0) * 255).clamp(0, 255).to(torch.uint8).numpy()
    np.testing.assert_array_equal(result, expected)
    # Below the trigger size crop runs the whole image too, so it gives the same pixels.
    np.testing.assert_array_equal(inpainter(small_image, small_mask, hd_strategy="crop", crop_trigger_size=900), result)


def test_resize_keeps_outside_pixels_and_upscales_a_run_at_the_limit(photo, inpainter):
    image, mask = photo
    result = inpainter(image, mask, hd_strategy="resize", resize_limit=600)
    hole = mask > 0
    np.testing.assert_array_equal(result[~hole], image[~hole])
    plan = inpainter.plan((HEIGHT, WIDTH), torch.from_numpy(hole), "resize", resize_limit=600)
    assert plan.strategy == "resize" and plan.run_size == (400, 600)
    rgb = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    small, small_hole = hd.downscale(rgb, torch.from_numpy(hole), (400, 600))
    run = inpainter.inpaint_batch(small[None], small_hole[None, None])[0]
    full = (hd.upscale(run, (HEIGHT, WIDTH)) * 255).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(result[hole], full[hole])
    # At or below the limit, resize is the original strategy.
    assert inpainter.plan((HEIGHT, WIDTH), torch.from_numpy(hole), "resize", resize_limit=3000).strategy == "original"


def test_float_images_keep_their_values_outside_the_hole(photo, inpainter):
    image, mask = photo
    crop = torch.from_numpy(image[:900, :1100]).permute(2, 0, 1).double() / 255
    result = inpainter(crop, mask[:900, :1100], hd_strategy="crop", crop_trigger_size=500)
    hole = torch.from_numpy(mask[:900, :1100] > 0)
    assert result.dtype == torch.float64 and torch.equal(result[:, ~hole], crop[:, ~hole])
    assert not torch.equal(result[:, hole], crop[:, hole])


# --- the memory guard ---------------------------------------------------------------------------

def test_guard_switches_original_to_crop_with_a_warning(photo, inpainter):
    image, mask = photo
    hole = torch.from_numpy(mask > 0)
    whole = memory.estimate_peak_bytes("reference", torch.float32, HEIGHT, WIDTH)
    boxes = hd.plan_crops(hole, 128)
    largest = max(memory.estimate_peak_bytes("reference", torch.float32, b.height, b.width) for b in boxes)
    assert largest < whole
    budget = (largest + whole) // 2
    plan = inpainter.plan((HEIGHT, WIDTH), hole, "original", max_memory=budget)
    assert plan.strategy == "crop" and plan.requested == "original" and plan.boxes == boxes
    assert plan.peak_bytes == largest and plan.budget_bytes == budget
    with pytest.warns(RuntimeWarning, match=re.escape(
            f"inpainting 3000x2000 with the original strategy (reference backend, float32) needs about "
            f"{memory.format_bytes(whole)}, more than the {memory.format_bytes(budget)} of max_memory; "
            f"switched to the crop strategy, which needs about {memory.format_bytes(largest)}")):
        result = inpainter(image, mask, hd_strategy="original", max_memory=budget)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(result, inpainter(image, mask, hd_strategy="crop"))


def test_guard_fails_with_the_numbers_when_nothing_fits(photo, inpainter):
    image, mask = photo
    whole = memory.estimate_peak_bytes("reference", torch.float32, HEIGHT, WIDTH)
    boxes = hd.plan_crops(torch.from_numpy(mask > 0), 128)
    largest = max(memory.estimate_peak_bytes("reference", torch.float32, b.height, b.width) for b in boxes)
    with pytest.raises(memory.InsufficientMemoryError) as info:
        inpainter(image, mask, hd_strategy="original", max_memory="100M")
    assert str(info.value) == (
        f"inpainting 3000x2000 with the original strategy (reference backend, float32) needs about "
        f"{memory.format_bytes(whole)}, more than the 100 MiB of max_memory; the crop strategy would need about "
        f"{memory.format_bytes(largest)} too. Use hd_strategy='resize' with a smaller resize_limit, a smaller "
        f"crop_margin, or raise max_memory if the machine has the memory.")
    assert isinstance(info.value, MemoryError)
    with pytest.raises(memory.InsufficientMemoryError, match="with the crop strategy"):
        inpainter(image, mask, hd_strategy="crop", max_memory="100M")


def test_estimates_grow_with_size_and_cover_the_measurements():
    for (backend, dtype_name), points in memory.MEASURED.items():
        dtype = getattr(torch, dtype_name)
        sizes = [64, 256, 512, 1000, 2048, 4096]
        estimates = [memory.estimate_peak_bytes(backend, dtype, s, s) for s in sizes]
        assert estimates == sorted(estimates), (backend, dtype_name)
        for pixels, extra in points:
            side = int(round(pixels ** 0.5))
            assert memory.estimate_peak_bytes(backend, dtype, side, side) >= extra
    assert memory.estimate_peak_bytes("no-such-backend", torch.float32, 512, 512) is None


def test_plans_without_measurements_or_budget_are_not_guarded():
    hole = torch.zeros(100, 100, dtype=torch.bool)
    hole[10:20, 10:20] = True
    plan = make_plan(hd.HDSettings("original"), (100, 100), hole, "no-such-backend", torch.float32, budget=1)
    assert plan.strategy == "original" and plan.peak_bytes is None
    plan = make_plan(hd.HDSettings("original"), (100, 100), hole, "reference", torch.float32, budget=None)
    assert plan.strategy == "original" and plan.peak_bytes > 0


@pytest.mark.parametrize("text,size", [("4G", 4 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("2000", 2000),
                                       (" 64 mb ", 64 << 20), (123, 123)])
def test_parse_size(text, size):
    assert memory.parse_size(text) == size


@pytest.mark.parametrize("text,message", [
    ("4X", "max_memory must look like 4G, 512M or 2000000000; got '4X'"),
    ("", "max_memory must look like 4G, 512M or 2000000000; got ''"),
    (0, "max_memory must be positive, got 0"),
])
def test_parse_size_errors(text, message):
    with pytest.raises(ValueError) as info:
        memory.parse_size(text)
    assert str(info.value) == message


def test_available_memory_is_read_from_this_machine():
    available = memory.available_bytes()
    assert available is not None and 0 < available
    with open("/proc/meminfo", encoding="ascii") as handle:
        total = int(next(line for line in handle if line.startswith("MemTotal:")).split()[1]) * 1024
    assert available <= total


def test_explain_draws_thousands_of_regions_and_names_the_first_ones():
    from lama_fast.explain import draw_plan

    hole = np.zeros((1500, 2400), bool)
    hole[5::20, 5::20] = True  # 9000 regions
    plan = make_plan(hd.HDSettings("crop", crop_margin=2, crop_trigger_size=0), hole.shape, torch.from_numpy(hole),
                     "cpu", torch.float32, None)
    assert len(plan.boxes) == 9000
    assert plan.describe().startswith("crop: 9000 region(s) 5x5+3+3, 5x5+23+3, ")
    assert plan.describe().endswith(", ... (8950 more)") and plan.describe().count("x5+") == 50
    picture = np.asarray(draw_plan(np.full((1500, 2400, 3), 200, np.uint8), hole, plan, max_side=1200))
    assert picture.shape[1] == 1200
    body = picture[:750]
    assert (body == (255, 214, 0)).all(axis=-1).sum() > 1000  # outlines in the first colour


def test_explain_picture_outlines_each_region_and_tints_the_hole():
    from lama_fast.explain import draw_plan

    rgb = np.full((300, 400, 3), 200, np.uint8)
    hole = np.zeros((300, 400), bool)
    hole[50:60, 50:70] = True
    hole[200:240, 300:330] = True
    plan = make_plan(hd.HDSettings("crop", crop_margin=20, crop_trigger_size=0), (300, 400),
                     torch.from_numpy(hole), "cpu", torch.float32, budget=None)
    assert plan.boxes == [hd.Box(30, 30, 80, 90), hd.Box(180, 280, 260, 350)]
    assert plan.describe() == "crop: 2 region(s) 60x50+30+30, 70x80+280+180"
    picture = np.asarray(draw_plan(rgb, hole, plan))
    assert picture.shape[1] == 400 and picture.shape[0] > 300  # the caption goes below the image
    body = picture[:300]
    assert tuple(body[70, 30]) == (255, 214, 0) and tuple(body[250, 349]) == (0, 200, 255)  # box outlines
    assert tuple(body[5, 5]) == (90, 90, 90)        # outside every region: darkened
    assert tuple(body[100, 150]) == (90, 90, 90)
    assert body[55, 60, 0] > body[55, 60, 1] + 100  # hole: tinted red
    assert tuple(body[70, 80]) == (200, 200, 200)   # inside a region, outside the hole: as it is


# --- the command line: --explain, the guard's note and its error --------------------------------

def _files(tmp_path, height=1000, width=1200):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    mask[100:160, 200:300] = 255
    mask[800:840, 1000:1100] = 255
    from PIL import Image

    Image.fromarray(image).save(tmp_path / "photo.png")
    Image.fromarray(mask).save(tmp_path / "photo_mask.png")
    return image, mask, tmp_path / "photo.png", tmp_path / "photo_mask.png"


def test_cli_explain_draws_the_plan_without_a_checkpoint(tmp_path, capsys, monkeypatch):
    from PIL import Image

    from lama_fast.cli import main

    monkeypatch.delenv("LAMA_FAST_CHECKPOINT", raising=False)
    _, _, image, mask = _files(tmp_path)
    target = tmp_path / "plan.png"
    code = main(["inpaint", str(image), str(mask), "--explain", str(target), "--crop-margin", "50"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines() == [f"{image}: crop: 2 region(s) 200x160+150+50, 200x140+950+750", f"wrote {target}"]
    with Image.open(target) as picture:
        assert picture.format == "PNG" and picture.width == 1200 and picture.height > 1000
    assert main(["inpaint", str(tmp_path), "-o", str(tmp_path / "out"), "--explain", str(target)]) == 2
    assert "--explain goes with one image" in capsys.readouterr().err


def test_cli_reports_the_guards_switch_and_its_refusal(tmp_path, capsys, golden_dir):
    from lama_fast.cli import main

    image, mask, image_path, mask_path = _files(tmp_path)
    checkpoint = str(golden_dir / "tiny" / "checkpoint.ckpt")
    whole = memory.estimate_peak_bytes("cpu", torch.float32, 1000, 1200)
    crop = max(memory.estimate_peak_bytes("cpu", torch.float32, b.height, b.width)
               for b in hd.plan_crops(torch.from_numpy(mask > 0), 128))
    budget = (whole + crop) // 2
    out = tmp_path / "out.png"
    code = main(["inpaint", str(image_path), str(mask_path), "-o", str(out), "--checkpoint", checkpoint,
                 "--hd-strategy", "original", "--max-memory", str(budget)])
    err = capsys.readouterr().err
    assert code == 0 and out.is_file()
    assert err == (f"lama-fast inpaint: inpainting 1200x1000 with the original strategy (cpu backend, float32) needs "
                   f"about {memory.format_bytes(whole)}, more than the {memory.format_bytes(budget)} of max_memory; "
                   f"switched to the crop strategy, which needs about {memory.format_bytes(crop)}\n")
    code = main(["inpaint", str(image_path), str(mask_path), "-o", str(tmp_path / "never.png"), "--checkpoint",
                 checkpoint, "--max-memory", "10M"])
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "never.png").exists()
    assert err.startswith("lama-fast inpaint: inpainting 1200x1000 with the crop strategy (cpu backend, float32) "
                          "needs about ")
    # The library's advice names the setting; the command adds the option that sets it.
    assert "Use hd_strategy='resize' (--hd-strategy resize) with a smaller resize_limit" in err


def test_load_takes_the_settings_and_checks_them_before_reading_the_file(golden_dir, tmp_path):
    import lama_fast

    inpainter = lama_fast.load(golden_dir / "tiny" / "checkpoint.ckpt", hd_strategy="resize", resize_limit=64,
                               max_memory="3G")
    assert inpainter.hd == hd.HDSettings("resize", 128, 800, 64) and inpainter.max_memory == 3 << 30
    assert "hd_strategy='resize'" in repr(inpainter)
    with pytest.raises(ValueError, match=re.escape("hd_strategy must be one of original, crop, resize; got 'x'")):
        lama_fast.load(tmp_path / "missing.ckpt", hd_strategy="x")
    with pytest.raises(ValueError, match=re.escape("max_memory must look like 4G, 512M or 2000000000; got 'lots'")):
        lama_fast.load(tmp_path / "missing.ckpt", max_memory="lots")


def test_a_full_mask_inpaints_the_whole_image_under_every_strategy(inpainter):
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (840, 1000, 3), dtype=np.uint8)
    mask = np.full((840, 1000), 255, np.uint8)
    whole = inpainter(image, mask, hd_strategy="original")
    assert inpainter.plan((840, 1000), torch.ones(840, 1000, dtype=torch.bool), "crop").boxes == [hd.Box(0, 0, 840, 1000)]
    np.testing.assert_array_equal(inpainter(image, mask, hd_strategy="crop"), whole)
    resized = inpainter(image, mask, hd_strategy="resize", resize_limit=500)
    assert resized.shape == image.shape and resized.dtype == np.uint8
    assert (whole != image).any(axis=-1).mean() > 0.99
