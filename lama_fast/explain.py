"""A picture of a plan: the image, its hole, and the regions the network will see."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .hd import Plan

_BOX_COLOURS = [(255, 214, 0), (0, 200, 255), (255, 96, 208), (120, 255, 80), (255, 140, 0), (180, 140, 255)]
# Pixels shaded per step: the float copy of the image exists one band of rows at a time.
_BAND_PIXELS = 1 << 20
# Up to this many regions every one is numbered; beyond it, only those whose number fits inside them.
_ALL_LABELS = 100


def draw_plan(rgb: np.ndarray, hole: np.ndarray, plan: Plan, max_side: Optional[int] = 1600):
    """A PIL image: ``rgb`` (uint8 H×W×3) darkened outside the plan's regions, the hole tinted
    red, each region outlined and numbered, and a caption with the strategy and memory figures.

    Memory beyond the inputs peaks near seven bytes per pixel (the shaded copy and PIL's), the
    float arithmetic runs a band of rows at a time, and each region costs one rectangle whatever
    their number (a crop plan's regions do not overlap, so marking them touches each pixel once)."""
    from PIL import Image, ImageDraw

    height, width = hole.shape
    inside = np.zeros((height, width), bool)
    for box in plan.boxes:
        inside[box.slices()] = True
    shaded = np.empty((height, width, 3), np.uint8)
    tint = np.array([255, 40, 40], np.float32) * 0.6
    step = max(1, _BAND_PIXELS // max(1, width))
    for top in range(0, height, step):
        rows = slice(top, min(height, top + step))
        shown = rgb[rows].astype(np.float32)
        # Whole-band arithmetic rather than boolean indexing (several times faster); x * 1 is exact.
        shown *= np.where(inside[rows], np.float32(1), np.float32(0.45))[..., None]
        shown = np.where(hole[rows][..., None], shown * np.float32(0.4) + tint, shown)
        shaded[rows] = shown.clip(0, 255).astype(np.uint8)
    del inside
    picture = Image.fromarray(shaded)
    del shaded
    scale = 1.0
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        picture = picture.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    caption = _caption(plan)
    line_height = 14
    canvas = Image.new("RGB", (picture.width, picture.height + line_height * len(caption) + 8), (24, 24, 24))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    thickness = max(2, round(3 * max(picture.size) / 1000))
    every_label = len(plan.boxes) <= _ALL_LABELS
    for number, box in enumerate(plan.boxes, start=1):
        colour = _BOX_COLOURS[(number - 1) % len(_BOX_COLOURS)]
        left, top = box.left * scale, box.top * scale
        # A region thinner than a pixel of the picture still gets its outline.
        corners = [left, top, max(left, box.right * scale - 1), max(top, box.bottom * scale - 1)]
        draw.rectangle(corners, outline=colour, width=thickness)
        label = f"{number}: {box.width}x{box.height}"
        x, y = corners[0] + thickness + 2, corners[1] + thickness + 1
        # Thousands of labels would cover the picture; past a hundred, a region too small for its own is unnumbered.
        if not every_label and (x + 6 * len(label) + 2 > corners[2] or y + 11 > corners[3]):
            continue
        draw.rectangle([x - 2, y - 1, x + 6 * len(label) + 2, y + 11], fill=(0, 0, 0))
        draw.text((x, y), label, fill=colour)
    for k, line in enumerate(caption):
        draw.text((6, picture.height + 4 + k * line_height), line, fill=(235, 235, 235))
    return canvas


def _caption(plan: Plan):
    from .memory import format_bytes

    first = plan.summary("crop: {count} region(s) of the {width}x{height} image go through the network",
                         "resize: the {width}x{height} image runs at {run_width}x{run_height}",
                         "{strategy}: the whole {width}x{height} image runs")
    lines = [first + (f" (asked for {plan.requested})" if plan.requested != plan.strategy else "")]
    if plan.peak_bytes is not None:
        budget = f" of {format_bytes(plan.budget_bytes)} free" if plan.budget_bytes is not None else ""
        lines.append(f"estimated peak memory {format_bytes(plan.peak_bytes)}{budget}")
    lines.extend(plan.notes)
    return lines
