"""The strategies' settings, and what a plan holds: pixel boxes and the regions a run inpaints."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

STRATEGIES = ("original", "crop", "resize")
DEFAULT_STRATEGY = "crop"
DEFAULT_CROP_MARGIN = 128
DEFAULT_CROP_TRIGGER_SIZE = 800
DEFAULT_RESIZE_LIMIT = 1280


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

    def summary(self, crop: str, resize: str, whole: str) -> str:
        """One of three templates, by what runs (crop regions, a resized image, the whole image), filled
        in with ``count``, ``regions`` (the first boxes as WxH+left+top), ``width``, ``height``,
        ``run_width``, ``run_height`` and ``strategy``."""
        height, width = self.image_size
        if self.strategy == "crop":
            shown = [f"{b.width}x{b.height}+{b.left}+{b.top}" for b in self.boxes[:_DESCRIBED_BOXES]]
            if len(self.boxes) > _DESCRIBED_BOXES:
                shown.append(f"... ({len(self.boxes) - _DESCRIBED_BOXES} more)")
            return crop.format(count=len(self.boxes), regions=", ".join(shown), width=width, height=height)
        if self.strategy == "resize" and self.run_size is not None:
            run_height, run_width = self.run_size
            return resize.format(width=width, height=height, run_width=run_width, run_height=run_height)
        return whole.format(strategy=self.strategy, width=width, height=height)

    def describe(self) -> str:
        """One line: what runs, then the notes."""
        what = self.summary("crop: {count} region(s) {regions}", "resize: the network runs at {run_width}x{run_height}",
                            "{strategy}: the whole {width}x{height} image")
        return "; ".join([what] + self.notes)
