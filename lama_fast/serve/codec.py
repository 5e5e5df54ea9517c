"""Bytes to images and back for the server: limits checked from the header, formats kept.

Everything here may see hostile bytes: a decoder is picked only among the formats below, the size is
checked before any pixel is decoded, and every failure is a :class:`RequestError` with the HTTP
status and a one-line message.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any, Dict, Optional, Tuple

from PIL import Image

from ..batch import renderable
from ..images import ImageTooLarge, open_image

# The decoders a request may reach (Pillow's names, those this Pillow has); MPO is what Pillow calls
# many cameras' JPEGs.
Image.init()
INPUT_FORMATS = tuple(name for name in ("PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF", "GIF") if name in Image.OPEN)
# The answer's format for each input format: lossless where the input was, PNG for GIF (a palette
# cannot hold the new colours).
ANSWER_FORMAT = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WEBP", "BMP": "BMP", "TIFF": "TIFF",
                 "GIF": "PNG"}
# What a client may ask for instead of the input's format.
FORMAT_NAMES = {"same": None, "png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
MEDIA_TYPE = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp",
              "TIFF": "image/tiff"}
_DATA_URL = re.compile(r"^data:[\w.+/-]*(;[\w.+-]+=[\w.+-]+)*;base64,", re.IGNORECASE)
# Metadata carried over to the answer: EXIF (orientation already applied), colour profile, resolution.
_KEPT_INFO = ("exif", "icc_profile", "dpi")


class RequestError(Exception):
    """A request the server refuses: ``status`` and a one-line ``message`` for the client."""

    def __init__(self, status: int, message: str, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def decode_base64(text: Any, what: str) -> bytes:
    """The bytes of a base64 string, with or without a ``data:...;base64,`` prefix."""
    if not isinstance(text, str) or not text:
        raise RequestError(422, f"{what} must be a non-empty base64 string")
    prefix = _DATA_URL.match(text)
    if prefix:
        text = text[prefix.end():]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(400, f"{what} is not valid base64: {error}") from None


def read_image(data: bytes, what: str, max_pixels: int) -> Tuple[Image.Image, str]:
    """An uploaded image, fully decoded, and its Pillow format; 413 above ``max_pixels`` (from the
    header), 415 for a format it does not take, 400 for damaged data."""
    if not data:
        raise RequestError(400, f"{what} is empty")
    try:
        image = open_image(io.BytesIO(data), "(uploaded)", what, max_pixels=max_pixels, formats=INPUT_FORMATS)
    except ImageTooLarge as error:
        raise RequestError(413, str(error).replace(" (uploaded)", "")) from None
    except ValueError as error:
        if isinstance(error.__cause__, Image.UnidentifiedImageError):
            raise RequestError(415, f"{what} is not an image in a format this server reads "
                                    "(PNG, JPEG, WebP, BMP, TIFF or GIF)") from None
        raise RequestError(400, str(error).replace(" (uploaded)", "")) from None
    except Exception as error:  # a decoder's own failure on damaged data (struct.error, IndexError...)
        raise RequestError(400, f"cannot read {what}: {type(error).__name__}: {error}") from None
    return image, image.format or ""


def read_pair(image_data: bytes, mask_data: bytes, max_pixels: int,
              size_error: Any = None) -> Tuple[Image.Image, Image.Image, str]:
    """The image (as :func:`lama_fast.batch.renderable` makes it), the mask and the image's format.

    ``size_error(image, mask)`` words the 400 for masks of another size."""
    image, fmt = read_image(image_data, "image", max_pixels)
    mask, _ = read_image(mask_data, "mask", max_pixels)
    if mask.size != image.size:
        message = (size_error(image, mask) if size_error else
                   f"mask is {mask.width}x{mask.height} but image is {image.width}x{image.height}")
        raise RequestError(400, message)
    kept = {key: image.info[key] for key in _KEPT_INFO if key in image.info}
    image = renderable(image)
    image.info.update(kept)
    return image, mask, fmt


def answer_format(input_format: str, requested: Optional[str] = None) -> str:
    """The format of the answer: ``requested`` (a FORMAT_NAMES key) or the one that fits the input."""
    if requested is not None:
        if requested.lower() not in FORMAT_NAMES:
            raise RequestError(400, f"format must be one of {', '.join(FORMAT_NAMES)}, got {requested!r}")
        chosen = FORMAT_NAMES[requested.lower()]
        if chosen is not None:
            return chosen
    return ANSWER_FORMAT[input_format]


def encode(image: Image.Image, fmt: str, metadata: Dict[str, Any], jpeg_quality: int) -> bytes:
    """``image`` in ``fmt`` with the input's EXIF, ICC profile and resolution; lossless except JPEG
    (at ``jpeg_quality``), which also drops alpha."""
    params: Dict[str, Any] = {key: metadata[key] for key in _KEPT_INFO if metadata.get(key)}
    if fmt == "JPEG":
        params["quality"] = jpeg_quality
        if image.mode not in ("RGB", "L"):
            image = image.convert("L" if image.mode in ("LA", "L") else "RGB")
    elif fmt == "PNG":
        params["compress_level"] = 1  # the encoder's time counts in every answer; the size matters less
    elif fmt == "WEBP":
        params.update(lossless=True, quality=100)
    elif fmt == "TIFF":
        params["compression"] = "tiff_deflate"
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()
