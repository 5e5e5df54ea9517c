"""Test inputs shared by the image and fuzzing tests."""

from __future__ import annotations

import numpy as np
from PIL import Image


def pil_image(values: np.ndarray, mode: str) -> Image.Image:
    """``values`` as a PIL image of ``mode``: stored as they are (cast) for the integer modes I;16 and I,
    made by PIL's conversion of the array's own image for the others (a bool array is mode 1 as it is)."""
    if mode == "I;16":
        return Image.fromarray(values.astype(np.uint16))
    if mode == "I":
        return Image.fromarray(values.astype(np.int32))
    return Image.fromarray(values).convert(mode)
