"""Turning the images and masks users pass in (numpy, PIL, torch, files) into what the model takes, and back.

What ``restore`` returns for each input (pixels outside the hole are always the input's, bit for bit):

- numpy HxW, HxWx1, HxWx2 (grey + alpha), HxWx3, HxWx4 (RGBA); uint8 or float16/32/64 in [0, 1]:
  a new array of the same shape and dtype.
- torch HxW or CxHxW with C in 1, 2, 3, 4; uint8 or any floating dtype in [0, 1]: a new tensor of the
  same shape, dtype and device.
- PIL RGB, RGBA, L, LA, 1, CMYK, YCbCr, HSV, RGBX: the same mode (and ``info``). P and PA come back
  RGB, or RGBA when the image has transparency: a palette cannot hold the new colours.
- Grey hole pixels are PIL's convert('L') of the RGB result for uint8 images (and ``>= 128`` of that for
  mode 1), 0.299 R + 0.587 G + 0.114 B clamped to [0, 1] for float ones; CMYK, YCbCr, HSV and RGBX hole
  pixels are PIL's conversion of the RGB result. Alpha is never touched.

Masks: a pixel is a hole when its value is > threshold (in the mask's own units; default 0, any non-zero
pixel, as the original LaMa). bool masks and PIL mode 1 are used as they are. Colour masks are reduced to
grey as PIL's convert('L') does for uint8 (and any PIL mode), by the maximum of R, G, B for other dtypes;
alpha and the second channel of grey + alpha masks are ignored.
"""

from __future__ import annotations

import numbers
import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from ._io import file_kind

# Single-channel modes whose values reach prepare_mask intact; a mask may be 16-bit, an image may not.
_WIDE_SINGLE_CHANNEL_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;16BS", "I;16LS")
# Raw modes of a file's data with 16 bits per channel ("BGR;16" is a packed 5-6-5 pixel, not one of them).
_WIDE_RAWMODE = re.compile(r"^(?!BGR;)[A-Za-z]+;16[BLNS]*$")


def _tile_rawmodes(image: Image.Image) -> list:
    """The raw modes the decoder will read the file's pixels in (known before ``load()`` only)."""
    rawmodes = []
    for tile in getattr(image, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else None)
        if isinstance(rawmode, str):
            rawmodes.append(rawmode)
    return rawmodes


def _wide_image_error(path: str, what: str, found: str) -> ValueError:
    return ValueError(
        f"{what} {path} is a 16-bit image ({found}); lama_fast takes 8 bits per channel: "
        f"convert it first, e.g. `magick {path} -depth 8 out.png`"
    )


def check_regular_file(path: Union[str, os.PathLike], what: str = "image", expected: str = "an image file") -> None:
    """Raise unless ``path`` is a regular file (symlinks followed), from its stat alone: nothing is opened.

    FileNotFoundError when it does not exist; ValueError when it cannot be looked at, or is a FIFO,
    a device, a socket or a directory (opening a FIFO or reading a device would block or never end)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except OSError as error:
        raise ValueError(f"cannot read {what} {path}: {error.strerror or error}") from error
    if not stat.S_ISREG(mode):
        raise ValueError(f"{what} {path} is not a regular file ({file_kind(mode)}); give {expected}")


def read_image(path: Union[str, os.PathLike], what: str = "image") -> Image.Image:
    """Open an image file fully loaded, with its EXIF orientation applied; 16-bit images and paths
    that are not regular files (FIFOs, devices, directories) are refused before anything is read."""
    path = str(Path(path))
    check_regular_file(path, what, "an image file")
    return open_image(path, path, what)


def open_image(source: Union[str, BinaryIO], name: str, what: str = "image", max_pixels: Optional[int] = None,
               formats: Optional[Sequence[str]] = None) -> Image.Image:
    """Decode an image from a path or binary file, fully loaded, with its EXIF orientation applied
    (and ``format`` set to the file's).

    ``name`` names it in messages. Before any pixel is decoded, from the file's header alone: 16-bit
    images are refused (ValueError), and so are images of more than ``max_pixels`` pixels
    (:class:`ImageTooLarge`). ``formats`` limits the decoders tried (Pillow format names). A file no
    decoder takes, or whose data is damaged, raises ValueError naming it."""
    wide = None
    try:
        with Image.open(source, formats=formats) as opened:
            width, height = opened.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLarge(f"{what} {name} is {width}x{height} pixels ({width * height / 1e6:.1f} MP); "
                                    f"the limit is {max_pixels / 1e6:g} MP")
            mode = opened.mode
            stored = [r for r in _tile_rawmodes(opened) if _WIDE_RAWMODE.match(r)]
            # A 16-bit single-channel mask keeps its values; Pillow would drop the low byte of wider RGB(A) data.
            if mode in _WIDE_SINGLE_CHANNEL_MODES and what != "mask":
                wide = f"PIL mode {mode!r}"
            elif stored and mode not in _WIDE_SINGLE_CHANNEL_MODES:
                wide = f"PIL mode {mode!r}, stored as {stored[0]!r}"
            else:
                opened.load()
                # exif_transpose returns a copy in every case, so the result outlives the closed file.
                image = ImageOps.exif_transpose(opened)
                image.format = opened.format
    except ImageTooLarge:
        raise
    except Image.DecompressionBombError as error:
        size = _header_size(source, formats)
        if size is not None and max_pixels is not None:
            width, height = size
            raise ImageTooLarge(f"{what} {name} is {width}x{height} pixels ({width * height / 1e6:.1f} MP); "
                                f"the limit is {max_pixels / 1e6:g} MP") from None
        raise ImageTooLarge(f"{what} {name} is too large: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"cannot read {what} {name}: {error}") from error
    if wide is not None:
        raise _wide_image_error(name, what, wide)
    return image


def _header_size(source: Union[str, BinaryIO], formats: Optional[Sequence[str]]) -> Optional[Tuple[int, int]]:
    """The size a file's header declares, read without Pillow's decompression-bomb check (which refuses
    such a file before its size can be reported); None when no decoder takes it."""
    for fmt in formats or Image.ID:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if factory is None:
            continue
        try:
            if hasattr(source, "seek"):
                source.seek(0)
                image = factory(source, "")
            else:
                with open(source, "rb") as fp:
                    image = factory(fp, source)
            return image.size
        except Exception:
            continue
    return None


class ImageTooLarge(ValueError):
    """An image has more pixels than the limit it is read under (known from its header)."""


# --- images --------------------------------------------------------------------------------------

# PIL modes prepare_image takes as they are ("P"/"PA" are converted to RGB(A) first; see prepare_image).
_PIL_PLAIN_MODES = {"RGB": "rgb", "RGBA": "rgba", "L": "grey", "LA": "grey_alpha", "1": "bilevel"}
# Modes whose hole pixels are written back by PIL's conversion of the RGB result.
_PIL_CONVERTED_MODES = ("CMYK", "YCbCr", "HSV", "RGBX")
_PIL_WIDE_MODES = {"I": "32-bit integer", "F": "32-bit float"}
_KIND_BY_CHANNELS = {1: "grey", 2: "grey_alpha", 3: "rgb", 4: "rgba"}
_ACCEPTED_PIL_MODES = "1, L, LA, P, PA, RGB, RGBA, RGBX, CMYK, YCbCr, HSV"


def _float_range_error(what: str, lo: float, hi: float) -> ValueError:
    hint = f" (values in [0, 255]? divide the {what} by 255)" if lo >= 0 and hi <= 255 else ""
    return ValueError(f"{what} values must lie in [0, 1], found values in [{lo:g}, {hi:g}]{hint}")


def _check_float_values(values: Union[np.ndarray, torch.Tensor], what: str) -> None:
    """Raise ValueError unless every value is finite and in [0, 1]."""
    # min and max are NaN as soon as one value is: two passes check all three conditions.
    if isinstance(values, np.ndarray):
        lo, hi = float(values.min()), float(values.max())
    else:
        lo, hi = (float(v) for v in torch.aminmax(values))
    if lo >= 0 and hi <= 1:
        return
    if lo != lo or hi != hi:
        raise ValueError(f"{what} contains NaN values")
    if lo == float("-inf") or hi == float("inf"):
        raise ValueError(f"{what} contains infinite values")
    raise _float_range_error(what, lo, hi)


def _grey_of_rgb(values: torch.Tensor) -> torch.Tensor:
    """Grey levels of 3xN RGB values: PIL's convert('L') for uint8, 0.299 R + 0.587 G + 0.114 B for floats."""
    if values.dtype == torch.uint8:
        r, g, b = values.to(torch.int32)
        return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).to(torch.uint8)
    work = torch.float64 if values.dtype == torch.float64 else torch.float32
    r, g, b = values.to(work)
    return (0.299 * r + 0.587 * g + 0.114 * b).clamp_(0, 1).to(values.dtype)


class PreparedImage:
    """An image as the model takes it (``rgb``), and what ``restore`` needs to give the result back as it came."""

    def __init__(
        self,
        rgb: torch.Tensor,
        original: Union[np.ndarray, torch.Tensor],
        kind: str,
        container: str,
        pil_mode: Optional[str] = None,
        pil_info: Optional[dict] = None,
    ) -> None:
        self.rgb = rgb
        self.size: Tuple[int, int] = (int(rgb.shape[1]), int(rgb.shape[2]))
        self._original = original
        self._kind = kind
        self._container = container
        self._pil_mode = pil_mode
        self._pil_info = pil_info

    def __repr__(self) -> str:
        height, width = self.size
        mode = f", mode={self._pil_mode!r}" if self._pil_mode else ""
        return f"PreparedImage({self._container}{mode}, {self._kind}, {width}x{height}, rgb {self.rgb.dtype})"

    def _check_result(self, rgb_out: Any, hole: Any) -> None:
        if not torch.is_tensor(rgb_out) or rgb_out.shape != self.rgb.shape or rgb_out.dtype != self.rgb.dtype:
            found = f"{rgb_out.dtype} {tuple(rgb_out.shape)}" if torch.is_tensor(rgb_out) else type(rgb_out).__name__
            raise ValueError(f"rgb_out must be a {self.rgb.dtype} tensor of shape {tuple(self.rgb.shape)}, got {found}")
        if not torch.is_tensor(hole) or hole.dtype != torch.bool or tuple(hole.shape) != self.size:
            found = f"{hole.dtype} {tuple(hole.shape)}" if torch.is_tensor(hole) else type(hole).__name__
            raise ValueError(f"hole must be a torch.bool tensor of shape {self.size}, got {found}")

    def _hole_values(self, values: torch.Tensor) -> torch.Tensor:
        """What the hole pixels (3xN RGB ``values``) become in the caller's channels: a CxN tensor."""
        if self._kind in ("rgb", "rgba"):
            return values
        if self._kind == "convert":
            pixels = values.t().contiguous().cpu().numpy()[None]  # 1xNx3 RGB
            converted = np.asarray(Image.fromarray(pixels, "RGB").convert(self._pil_mode))
            return torch.from_numpy(np.ascontiguousarray(converted[0].T))
        grey = _grey_of_rgb(values)
        if self._kind == "bilevel":
            return (grey >= 128)[None]  # PIL's convert('1', dither=Image.Dither.NONE)
        return grey[None]

    def restore(self, rgb_out: torch.Tensor, hole: torch.Tensor) -> Any:
        """The caller's image with the hole pixels taken from ``rgb_out`` (3xHxW like ``rgb``); a new object."""
        self._check_result(rgb_out, hole)
        if self._container == "torch":
            return self._restore_torch(rgb_out, hole)
        rgb_out = rgb_out.detach().cpu().numpy()
        hole = hole.cpu().numpy()
        out = self._original.copy()
        hwc = out.reshape(out.shape[0], out.shape[1], -1)  # a view; HxW becomes HxWx1
        count = np.count_nonzero(hole)
        if count and self._kind in ("rgb", "rgba") and count * 10 > hole.size:
            # For large holes one masked pass beats gathering tens of millions of indices.
            np.copyto(hwc[..., :3], rgb_out.transpose(1, 2, 0), where=hole[..., None])
        elif count:
            rows, cols = np.nonzero(hole)
            values = self._hole_values(torch.from_numpy(rgb_out[:, rows, cols])).numpy()
            hwc[rows, cols, :values.shape[0]] = values.T
        if self._container == "numpy":
            return out
        if self._kind == "bilevel":
            result = Image.fromarray(out)
        else:
            result = Image.frombytes(self._pil_mode, (out.shape[1], out.shape[0]), out.tobytes())
        result.info.update(self._pil_info or {})
        return result

    def _restore_torch(self, rgb_out: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        out = self._original.clone()
        chw = out if out.ndim == 3 else out[None]
        hole = hole.to(out.device)
        if self._kind in ("rgb", "rgba"):
            chw[:3] = torch.where(hole, rgb_out.to(out.device), chw[:3])
        else:
            rows, cols = hole.nonzero(as_tuple=True)
            chw[0, rows, cols] = self._hole_values(rgb_out.to(out.device)[:, rows, cols])[0]
        return out


def _image_dtype_error(dtype: Any) -> TypeError:
    hint = " (16-bit data: pass image / 65535 as float32)" if str(dtype) in ("uint16", "torch.uint16") else ""
    return TypeError(f"image must be uint8, or floating point with values in [0, 1]; got dtype {dtype}{hint}")


def _rgb_from_hwc(array: np.ndarray) -> torch.Tensor:
    """A new 3xHxW tensor (native byte order) from an HxWxC array: RGB channels, or the grey one repeated."""
    height, width, channels = array.shape
    rgb = np.empty((3, height, width), array.dtype.newbyteorder("="))
    source = array[..., :3].transpose(2, 0, 1) if channels >= 3 else array[..., 0][None]
    np.copyto(rgb, source)
    return torch.from_numpy(rgb)


def _check_layout(what: str, shape: Sequence[int], channel_axis: int, expected: str, other_end: str,
                  other_end_channels: Tuple[int, ...] = (1, 3, 4), batch: str = "") -> None:
    """Raise ValueError unless ``shape`` is HxW, or 3-D with 1 to 4 channels on ``channel_axis`` (0 or 2).

    The message says what was ``expected``, then ``other_end`` when the channels seem to be at the other
    end of the shape (a count in ``other_end_channels`` there), or ``batch`` when the shape is 4-D."""
    shape = tuple(shape)
    if len(shape) == 2 or (len(shape) == 3 and shape[channel_axis] in (1, 2, 3, 4)):
        return
    hint = ""
    if len(shape) == 3 and shape[2 - channel_axis] in other_end_channels:
        hint = other_end
    elif len(shape) == 4:
        hint = batch
    raise ValueError(f"{what} must be {expected} got shape {shape}{hint}")


def _check_numpy_image(array: np.ndarray) -> None:
    kind, itemsize = array.dtype.kind, array.dtype.itemsize
    if not ((kind == "u" and itemsize == 1) or (kind == "f" and itemsize in (2, 4, 8))):
        raise _image_dtype_error(array.dtype)
    _check_layout("image", array.shape, 2, "an HxW, HxWx1, HxWx2, HxWx3 or HxWx4 array,",
                  "; a CxHxW array? pass image.transpose(1, 2, 0)",
                  batch="; for a batch of images use Inpainter.inpaint_batch")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image is empty: shape {tuple(array.shape)}")
    if kind == "f":
        _check_float_values(array, "image")


def _prepare_numpy(array: np.ndarray) -> PreparedImage:
    _check_numpy_image(array)
    hwc = array.reshape(array.shape[0], array.shape[1], -1)
    return PreparedImage(_rgb_from_hwc(hwc), array, _KIND_BY_CHANNELS[hwc.shape[2]], "numpy")


def _load_pil(image: Image.Image, what: str) -> None:
    """Decode a lazily opened PIL image now, so a broken file is a ValueError here, not an OSError later."""
    try:
        image.load()
    except (OSError, SyntaxError) as error:
        raise ValueError(f"{what} could not be decoded: {error}") from error


def _prepare_pil(image: Image.Image) -> PreparedImage:
    _load_pil(image, "image")
    mode = image.mode
    if mode in ("P", "PA"):
        # A palette cannot hold new colours: the result is RGB, or RGBA where the image has transparency.
        image = image.convert("RGBA" if mode == "PA" or image.has_transparency_data else "RGB")
        mode = image.mode
    if mode.startswith("I;16"):
        raise ValueError(
            f"image has PIL mode {mode!r}, a 16-bit mode; lama_fast takes 8 bits per channel: convert it first, "
            f"e.g. Image.fromarray((np.asarray(img) >> 8).astype(np.uint8)), or pass a float array in [0, 1]"
        )
    if mode in _PIL_WIDE_MODES:
        raise ValueError(
            f"image has PIL mode {mode!r}, a {_PIL_WIDE_MODES[mode]} mode; lama_fast takes 8 bits per channel: "
            f"convert it to 8 bits, or pass a float array in [0, 1]"
        )
    if mode not in _PIL_PLAIN_MODES and mode not in _PIL_CONVERTED_MODES:
        raise ValueError(f"image has PIL mode {mode!r}, which is not supported; accepted modes: {_ACCEPTED_PIL_MODES}")
    original = np.asarray(image)
    if original.shape[0] == 0 or original.shape[1] == 0:
        raise ValueError(f"image is empty: PIL size {image.size[0]}x{image.size[1]}")
    info = dict(image.info)
    if mode == "1":
        model = np.where(original, np.uint8(255), np.uint8(0))[..., None]
        return PreparedImage(_rgb_from_hwc(model), original, "bilevel", "pil", mode, info)
    if mode in _PIL_CONVERTED_MODES:
        model = np.asarray(image.convert("RGB"))
        return PreparedImage(_rgb_from_hwc(model), original, "convert", "pil", mode, info)
    hwc = original.reshape(original.shape[0], original.shape[1], -1)
    return PreparedImage(_rgb_from_hwc(hwc), original, _PIL_PLAIN_MODES[mode], "pil", mode, info)


def _prepare_torch(tensor: torch.Tensor) -> PreparedImage:
    tensor = tensor.detach()
    if tensor.dtype != torch.uint8 and not tensor.is_floating_point():
        raise _image_dtype_error(tensor.dtype)
    shape = tuple(tensor.shape)
    if tensor.ndim == 4:
        raise ValueError(
            f"image is a batch of shape {shape}; pass one CxHxW image, or use Inpainter.inpaint_batch for batches"
        )
    _check_layout("image", shape, 0, "a CxHxW tensor with C in 1, 2, 3, 4, or HxW;",
                  "; an HxWxC tensor? pass image.permute(2, 0, 1)", other_end_channels=(3, 4))
    chw = tensor if tensor.ndim == 3 else tensor[None]
    if chw.shape[1] == 0 or chw.shape[2] == 0:
        raise ValueError(f"image is empty: shape {shape}")
    if tensor.is_floating_point():
        _check_float_values(tensor, "image")
    channels = chw.shape[0]
    # A contiguous 3- or 4-channel tensor gives a view: rgb then shares memory with the caller's tensor.
    rgb = chw[:3] if channels >= 3 else chw[:1].expand(3, -1, -1)
    return PreparedImage(rgb.contiguous(), tensor, _KIND_BY_CHANNELS[channels], "torch")


def prepare_image(image: Any) -> PreparedImage:
    """Check an image (numpy HxW[xC], PIL, or torch [C]xHxW) and give its RGB pixels as a 3xHxW tensor."""
    if isinstance(image, Image.Image):
        return _prepare_pil(image)
    if isinstance(image, np.ndarray):
        return _prepare_numpy(image)
    if torch.is_tensor(image):
        return _prepare_torch(image)
    raise TypeError(f"image must be a numpy array, a PIL image or a torch tensor, got {type(image).__name__}")


# --- masks ---------------------------------------------------------------------------------------

def _mask_array(mask: Any) -> Tuple[np.ndarray, str]:
    """The mask as an HxW or HxWxC numpy array (may be the caller's own), and how it was given."""
    if isinstance(mask, Image.Image):
        _load_pil(mask, "mask")
        if mask.mode not in ("1", "L", "F", "I") and not mask.mode.startswith("I;16"):
            try:
                mask = mask.convert("L")
            except ValueError:
                raise ValueError(f"mask has PIL mode {mask.mode!r}, which PIL cannot convert to 'L'") from None
        return np.asarray(mask), "PIL"
    if isinstance(mask, np.ndarray):
        return mask, "numpy"
    if torch.is_tensor(mask):
        tensor = mask.detach().cpu()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()  # exact; numpy has no bfloat16
        if tensor.dtype.is_complex:
            raise _mask_dtype_error(tensor.dtype)
        if tensor.ndim == 4:
            raise ValueError(f"mask is a batch of shape {tuple(mask.shape)}; pass one HxW or 1xHxW mask")
        _check_layout("mask", tensor.shape, 0, "an HxW or CxHxW tensor with C in 1, 2, 3, 4;",
                      "; an HxWxC tensor? pass mask.permute(2, 0, 1)")
        return (tensor.permute(1, 2, 0) if tensor.ndim == 3 else tensor).numpy(), "torch"
    raise TypeError(f"mask must be a numpy array, a PIL image or a torch tensor, got {type(mask).__name__}")


def _mask_dtype_error(dtype: Any) -> TypeError:
    return TypeError(f"mask must be bool, integer or floating point; got dtype {dtype}")


def prepare_mask(mask: Any, size: Tuple[int, int], threshold: float = 0) -> torch.Tensor:
    """The hole (True) of a mask for an image of ``size`` (H, W): pixels whose value is > ``threshold``."""
    if not isinstance(threshold, numbers.Real) or isinstance(threshold, bool):
        raise TypeError(f"mask threshold must be a number, got {type(threshold).__name__}")
    if threshold != threshold:
        raise ValueError("mask threshold is NaN")
    array, given_as = _mask_array(mask)
    kind = array.dtype.kind
    if kind not in "buif":
        raise _mask_dtype_error(array.dtype)
    _check_layout("mask", array.shape, 2, "an HxW, HxWx1, HxWx2, HxWx3 or HxWx4 array,",
                  "; a CxHxW array? pass mask.transpose(1, 2, 0)")
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        shape = tuple(mask.shape) if given_as != "PIL" else array.shape
        raise ValueError(f"mask is empty: shape {shape}")
    if (height, width) != tuple(size):
        raise ValueError(f"mask is {width}x{height} but the image is {size[1]}x{size[0]}")
    if kind == "f" and np.isnan(array).any():
        raise ValueError("mask contains NaN values")
    channels = array.shape[2] if array.ndim == 3 else 1
    if channels <= 2:
        grey = array if array.ndim == 2 else array[..., 0]
    elif array.dtype == np.uint8:
        rgb = array[..., :3].astype(np.uint32)
        grey = ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)
    else:
        grey = array[..., :3].max(axis=2)
    if kind == "b":
        hole = np.array(grey, dtype=bool)  # a copy: the result never shares the caller's memory
    else:
        hole = grey > threshold
    return torch.from_numpy(hole)


