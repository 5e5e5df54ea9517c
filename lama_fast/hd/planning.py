"""What the network sees for one image: the strategy's regions, checked against the memory budget.

A mask can hold millions of hole regions, so crop planning never looks at pairs of regions.  It has
two stages, each linear in the pixels and the regions: grouping the hole pixels into regions and
growing their boxes (lama_fast.hd.grouping), then merging the boxes that overlap (lama_fast.hd.merging).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch

from .. import memory
from .grouping import crop_regions, grouping_size
from .merging import as_boxes, merge_crops
from .resize import resized_size
from .settings import DEFAULT_CROP_MARGIN, Box, HDSettings, Plan


def plan_crops(hole: torch.Tensor, margin: int = DEFAULT_CROP_MARGIN, min_side: int = 1) -> List[Box]:
    """The boxes the ``crop`` strategy inpaints: each hole region's bounding box grown by ``margin``
    on every side, clipped to the image, grown to ``min_side`` where shorter (see crop_regions),
    overlapping boxes merged until none overlap.

    Every hole pixel lies in exactly one box, and each box holds whole hole regions.  Time and memory
    are linear in the pixels and the regions (see the module's docstring)."""
    height, width = hole.shape
    return as_boxes(merge_crops(crop_regions(hole, margin, min_side), height, width))


def uses_crop(settings: HDSettings, height: int, width: int) -> bool:
    return settings.strategy == "crop" and max(height, width) > settings.crop_trigger_size


def make_plan(
    settings: HDSettings,
    size: Tuple[int, int],
    hole: torch.Tensor,
    backend: str,
    dtype: torch.dtype,
    budget: Optional[int],
    explicit_budget: bool = False,
    *,
    min_side: int = 1,
) -> Plan:
    """The strategy's regions for ``size`` and ``hole``, checked against ``budget`` bytes: an
    ``original`` run (or a ``crop`` below its trigger size) that would not fit becomes ``crop``
    with a note; a run that cannot fit either way raises InsufficientMemoryError.

    Planning the crops is checked against the same budget before each of its two stages (finding
    the hole regions, merging their boxes), so a mask made to be expensive to plan fails with the
    numbers instead of exhausting the machine.  ``min_side`` is the smallest side the network
    takes: crop boxes are grown to it, and a resized run keeps its short side at least that long."""
    from ..inpaint import PAD_MODULO

    height, width = size
    source = "max_memory" if explicit_budget else "available memory"
    whole = [Box(0, 0, height, width)]
    run_size = resized_size(settings, height, width, min_side)

    def largest(sizes: np.ndarray) -> Optional[int]:
        """The estimate of the largest of these (height, width) runs; None if any has none."""
        if not len(sizes):
            return None
        # The estimate depends on the sizes padded to the network's multiple only.
        padded = np.unique(-(-np.asarray(sizes, np.int64) // PAD_MODULO), axis=0) * PAD_MODULO
        estimates = [memory.estimate_peak_bytes(backend, dtype, int(h), int(w)) for h, w in padded]
        return None if any(e is None for e in estimates) else max(estimates)

    def check_planning(need: int, what: str) -> None:
        if budget is not None and need > budget:
            raise memory.InsufficientMemoryError(
                f"{what} of the {width}x{height} mask needs about {memory.format_bytes(need)}, more than the "
                f"{memory.format_bytes(budget)} of {source}. Use a larger crop_margin (hole regions closer than "
                f"twice the margin are grouped first), hd_strategy='resize', or raise max_memory if the machine "
                f"has the memory.")

    def crops() -> Plan:
        margin = settings.crop_margin
        if budget is not None:
            counts = grouping_size(hole, margin, min_side)
            check_planning(memory.estimate_grouping_bytes(*counts),
                           f"finding the hole regions (up to {counts.components} of them)")
        regions = crop_regions(hole, margin, min_side)
        check_planning(memory.estimate_merging_bytes(len(regions)), f"merging the {len(regions)} crop boxes")
        merged = merge_crops(regions, height, width)
        del regions
        cropped = Plan(settings.strategy, "crop", size, as_boxes(merged))
        cropped.peak_bytes = largest(np.stack([merged[:, 2] - merged[:, 0], merged[:, 3] - merged[:, 1]], axis=1))
        cropped.budget_bytes = budget
        return cropped

    if uses_crop(settings, height, width):
        plan = crops()
    else:
        if run_size is not None:
            plan = Plan(settings.strategy, "resize", size, whole, run_size=run_size)
        else:
            plan = Plan(settings.strategy, "original", size, whole)
        plan.peak_bytes = largest(np.array([run_size or (height, width)]))
        plan.budget_bytes = budget
    if budget is None or plan.peak_bytes is None or plan.peak_bytes <= budget:
        return plan
    need = (f"inpainting {width}x{height} with the {plan.strategy} strategy ({backend} backend, "
            f"{str(dtype).replace('torch.', '')}) needs about {memory.format_bytes(plan.peak_bytes)}, "
            f"more than the {memory.format_bytes(budget)} of {source}")
    if plan.strategy == "original":
        cropped = crops()
        if cropped.peak_bytes is None:  # no hole: the crop strategy runs nothing
            cropped.notes.append(f"{need}; switched to the crop strategy, which has nothing to run")
            return cropped
        if cropped.peak_bytes <= budget:
            cropped.notes.append(f"{need}; switched to the crop strategy, which needs about "
                                 f"{memory.format_bytes(cropped.peak_bytes)}")
            return cropped
        need += f"; the crop strategy would need about {memory.format_bytes(cropped.peak_bytes)} too"
    raise memory.InsufficientMemoryError(
        f"{need}. Use hd_strategy='resize' with a smaller resize_limit, a smaller crop_margin, or raise "
        f"max_memory if the machine has the memory."
    )
