"""A picture of a plan: the image, its hole, and the regions the network will see."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .hd import Plan

_BOX_COLOURS = [(255, 214, 0), (0, 200, 255), (255, 96, 208), (120, 255, 80), (255, 140, 0), (180, 140, 255)]


def draw_plan(rgb: np.ndarray, hole: np.ndarray, plan: Plan, max_side: Optional[int] = 1600):
    """A PIL image: ``rgb`` (uint8 H×W×3) darkened outside the plan's regions, the hole tinted
    red, each region outlined and numbered, and a caption with the strategy and memory figures."""
    from PIL import Image, ImageDraw

    height, width = hole.shape
    shown = rgb.astype(np.float32)
    inside = np.zeros((height, width), bool)
    for box in plan.boxes:
        inside[box.slices()] = True
    shown[~inside] *= 0.45
    shown[hole] = shown[hole] * 0.4 + np.array([255, 40, 40], np.float32) * 0.6
    picture = Image.fromarray(shown.clip(0, 255).astype(np.uint8))
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
    for number, box in enumerate(plan.boxes, start=1):
        colour = _BOX_COLOURS[(number - 1) % len(_BOX_COLOURS)]
        corners = [box.left * scale, box.top * scale, box.right * scale - 1, box.bottom * scale - 1]
        draw.rectangle(corners, outline=colour, width=thickness)
        label = f"{number}: {box.width}x{box.height}"
        x, y = corners[0] + thickness + 2, corners[1] + thickness + 1
        draw.rectangle([x - 2, y - 1, x + 6 * len(label) + 2, y + 11], fill=(0, 0, 0))
        draw.text((x, y), label, fill=colour)
    for k, line in enumerate(caption):
        draw.text((6, picture.height + 4 + k * line_height), line, fill=(235, 235, 235))
    return canvas


def _caption(plan: Plan):
    from .memory import format_bytes

    height, width = plan.image_size
    if plan.strategy == "crop":
        first = f"crop: {len(plan.boxes)} region(s) of the {width}x{height} image go through the network"
    elif plan.strategy == "resize" and plan.run_size is not None:
        first = f"resize: the {width}x{height} image runs at {plan.run_size[1]}x{plan.run_size[0]}"
    else:
        first = f"{plan.strategy}: the whole {width}x{height} image runs"
    lines = [first + (f" (asked for {plan.requested})" if plan.requested != plan.strategy else "")]
    if plan.peak_bytes is not None:
        budget = f" of {format_bytes(plan.budget_bytes)} free" if plan.budget_bytes is not None else ""
        lines.append(f"estimated peak memory {format_bytes(plan.peak_bytes)}{budget}")
    lines.extend(plan.notes)
    return lines
