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

The modules: ``settings`` (HDSettings, Box, Plan), ``labels`` (connected components),
``grouping`` and ``merging`` (the two stages of crop planning), ``resize`` and
``planning`` (make_plan: the strategy's regions under the memory guard).
"""

from .grouping import GroupingSize, crop_regions, grouping_size
from .labels import _compact, _components, _runs, _touching  # noqa: F401  (tests and benchmarks call them)
from .merging import as_boxes, merge_crops
from .planning import make_plan, plan_crops, uses_crop
from .resize import downscale, resized_size, upscale
from .settings import (
    DEFAULT_CROP_MARGIN, DEFAULT_CROP_TRIGGER_SIZE, DEFAULT_RESIZE_LIMIT, DEFAULT_STRATEGY, STRATEGIES, Box, HDSettings,
    Plan,
)

__all__ = [
    "STRATEGIES", "DEFAULT_STRATEGY", "DEFAULT_CROP_MARGIN", "DEFAULT_CROP_TRIGGER_SIZE", "DEFAULT_RESIZE_LIMIT",
    "Box", "HDSettings", "Plan", "GroupingSize", "crop_regions", "grouping_size", "merge_crops", "as_boxes",
    "plan_crops", "uses_crop", "resized_size", "downscale", "upscale", "make_plan",
]
