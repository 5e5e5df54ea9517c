"""Fuzzing Inpainter's input handling: only TypeError/ValueError for bad input, pixels outside the hole kept."""

from __future__ import annotations

import functools
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from configs import TINY_CONFIG
from lama_fast import Inpainter, optimize
from lama_fast.model.random import random_generator
from pictures import pil_image

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

MAX_SIDE = 40
NUMPY_FLOATS = ("float16", "float32", "float64")
TORCH_FLOATS = NUMPY_FLOATS + ("bfloat16",)


@functools.lru_cache(maxsize=None)
def _inpainter() -> Inpainter:
    return Inpainter(optimize(random_generator(TINY_CONFIG, seed=0), backend="reference"))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # On images of a few hundred pixels, waking a second thread costs more than the work (50x on a busy machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


IMAGE_DEFECTS = ("image dtype", "image layout", "image empty", "image values", "PIL mode")
MASK_DEFECTS = ("mask size", "mask dtype", "mask NaN", "mask layout")
# About half the calls are valid; the others carry exactly one defect, so each defect is what gets checked.
DEFECTS = (None,) * 9 + IMAGE_DEFECTS + MASK_DEFECTS


def _container(draw, defect, not_in_pil) -> str:
    """numpy, PIL or torch; numpy or torch for the defects in ``not_in_pil``, which a PIL image cannot carry."""
    return draw(st.sampled_from(["numpy", "torch"] if defect in not_in_pil else ["numpy", "PIL", "torch"]))


@st.composite
def images(draw, height: int, width: int, defect) -> Any:
    """An image in one of many containers, dtypes and layouts, with ``defect`` (or none)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if defect == "image empty":
        height = 0
    if defect == "PIL mode":
        container = "PIL"
    else:
        container = _container(draw, defect, ("image dtype", "image layout", "image values"))
    if container == "PIL":
        if defect == "PIL mode":
            mode = draw(st.sampled_from(["I;16", "I", "F"]))
            if mode == "I;16":
                return Image.fromarray(rng.integers(0, 2**16, (height, width), dtype=np.uint16))
        else:
            mode = draw(st.sampled_from(["RGB", "RGBA", "L", "LA", "1", "P", "CMYK"]))
        if height == 0:
            return Image.new(mode, (width, 0))
        return Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8)).convert(mode)

    floats = list(TORCH_FLOATS if container == "torch" else NUMPY_FLOATS)
    if defect == "image dtype":
        bad = ["bool", "int16", "int32", "complex64"] + (["uint16"] if container == "numpy" else ["int64"])
        dtype = draw(st.sampled_from(bad))
    elif defect == "image values":
        dtype = draw(st.sampled_from(floats))
    else:
        dtype = draw(st.sampled_from(["uint8", "uint8"] + floats))
    if defect == "image layout":
        layout = draw(st.sampled_from([(5,) if container == "numpy" else (6,), "batch"]))
    else:
        layout = draw(st.sampled_from([(), (1,), (2,), (3,), (3,), (4,)]))
    if container == "numpy":
        shape = (2, height, width, 3) if layout == "batch" else (height, width) + layout
    else:
        shape = (1, 3, height, width) if layout == "batch" else layout + (height, width)
    values = rng.random(shape)
    if defect == "image values":
        spot = tuple(rng.integers(0, n) for n in shape)
        values[spot] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1.5, -0.5]))
    if dtype in ("uint8", "int16", "uint16", "int32", "int64"):
        array = (values * 256).astype(dtype)
    else:
        array = values.astype("float32" if dtype == "bfloat16" else dtype)
    if container == "numpy":
        return array
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.to(torch.bfloat16) if dtype == "bfloat16" else tensor


@st.composite
def masks(draw, height: int, width: int, defect):
    """A mask in many forms with ``defect`` (or none), the threshold to pass, and the hole Inpainter must see."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pattern = draw(st.sampled_from(["zero", "full", "sparse", "sparse", "sparse"]))
    levels = np.zeros((height + (defect == "mask size"), width), np.uint8)
    if pattern == "full":
        levels[:] = draw(st.sampled_from([1, 128, 255]))
    elif pattern == "sparse":
        chosen = rng.random(levels.shape) < draw(st.sampled_from([0.02, 0.2, 0.6]))
        levels[chosen] = rng.choice(np.array([1, 2, 127, 128, 200, 255], np.uint8), size=int(chosen.sum()))
    half = draw(st.booleans())  # threshold 0, or one between levels 127 and 128 in the mask's own units
    container = _container(draw, defect, ("mask dtype", "mask NaN", "mask layout"))
    if container == "PIL":
        mode = draw(st.sampled_from(["1", "L", "RGB", "I;16"]))
        value = pil_image(levels > 0 if mode == "1" else levels, mode)
        threshold = 127 if half else 0
        return value, threshold, (levels > 0) if mode == "1" else (levels > threshold)

    if defect == "mask dtype":
        dtype = "complex64"
    elif defect == "mask NaN":
        dtype = draw(st.sampled_from(["float32", "float64"]))
    else:
        dtype = draw(st.sampled_from(["bool", "uint8", "uint8", "uint16", "int32", "int64", "float32", "float64"]))
    if dtype == "bool":
        array = levels > 0
    elif dtype in ("float32", "float64", "complex64"):
        array = (levels / 255).astype(dtype)
    else:
        array = levels.astype(dtype)
    if defect == "mask NaN":
        array[tuple(rng.integers(0, n) for n in array.shape)] = np.nan
    is_float = array.dtype.kind in "fc"
    threshold = (0.5 if is_float else 127) if half else 0
    hole = (levels > 0) if dtype == "bool" else (levels > (127 if half else 0))
    channels = draw(st.sampled_from([None, 1, 3]))
    if defect == "mask layout":
        channels = 5
    if channels is not None:
        array = np.repeat(array[..., None], channels, axis=2)  # equal channels: every reduction gives the level
    if container == "torch":
        if channels is not None:
            array = np.moveaxis(array, 2, 0)
        return torch.from_numpy(np.ascontiguousarray(array)), threshold, hole
    return array, threshold, hole


def _pixels(image: Any) -> np.ndarray:
    """An HxW[xC] numpy view of any image for comparisons."""
    if isinstance(image, Image.Image):
        return np.asarray(image)
    if torch.is_tensor(image):
        array = image.float().numpy() if image.dtype == torch.bfloat16 else image.numpy()
        return np.moveaxis(array, 0, -1) if array.ndim == 3 else array
    return image


def _describe(value: Any) -> str:
    if isinstance(value, Image.Image):
        return f"PIL {value.mode}"
    return f"{type(value).__name__} {value.dtype} {value.ndim}-D"


@st.composite
def calls(draw):
    height, width = draw(st.integers(1, MAX_SIDE)), draw(st.integers(1, MAX_SIDE))
    defect = draw(st.sampled_from(DEFECTS))
    image = draw(images(height, width, defect))
    mask, threshold, hole = draw(masks(height, width, defect))
    options = dict(
        hd_strategy=draw(st.sampled_from(["original", "crop", "resize"])),
        mask_threshold=threshold,
        crop_margin=draw(st.integers(0, 8)),
        crop_trigger_size=draw(st.integers(0, MAX_SIDE)),
        resize_limit=draw(st.integers(8, MAX_SIDE)),
    )
    return image, mask, hole, options, defect


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(calls())
def test_inpainter_takes_valid_input_and_names_bad_input(call):
    given_image, mask, hole, options, defect = call
    event(f"defect: {defect}")
    if defect is None:
        event(f"image: {_describe(given_image)}")
        event(f"mask: {_describe(mask)}")
        event(f"strategy: {options['hd_strategy']}, hole: {'some' if hole.any() else 'none'}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a memory-guard note is not what this test checks
        if defect is not None:
            with pytest.raises((TypeError, ValueError)):
                _inpainter()(given_image, mask, **options)
            return
        result = _inpainter()(given_image, mask, **options)

    if isinstance(given_image, Image.Image):
        assert isinstance(result, Image.Image) and result.size == given_image.size
        if given_image.mode == "P":  # documented: a palette image comes back RGB, or RGBA if it has transparency
            given_image = given_image.convert("RGBA" if given_image.has_transparency_data else "RGB")
            assert result.mode == given_image.mode
        else:
            assert result.mode == given_image.mode
    elif torch.is_tensor(given_image):
        assert torch.is_tensor(result) and result.dtype == given_image.dtype and result.device == given_image.device
        assert result.shape == given_image.shape and result.data_ptr() != given_image.data_ptr()
    else:
        assert isinstance(result, np.ndarray) and result.dtype == given_image.dtype
        assert result.shape == given_image.shape and not np.shares_memory(result, given_image)

    before, after = _pixels(given_image), _pixels(result)
    np.testing.assert_array_equal(after[~hole], before[~hole])
    if before.ndim == 3 and before.shape[2] in (2, 4):  # alpha is never touched
        np.testing.assert_array_equal(after[..., -1], before[..., -1])
    if after.dtype.kind == "f":
        assert np.isfinite(after).all() and after.min() >= 0 and after.max() <= 1


# --- a fixed sweep, so every kind of input runs under every strategy whatever hypothesis draws ------------------

SWEEP_H, SWEEP_W = 23, 31


def _sweep_image(kind: str) -> Any:
    rng = np.random.default_rng(len(kind))
    pixels = rng.integers(0, 256, (SWEEP_H, SWEEP_W, 4), dtype=np.uint8)
    container, spec = kind.split(" ", 1)
    if container == "PIL":
        if spec == "P transparent":
            image = Image.fromarray(pixels[..., :3]).convert("P")
            image.info["transparency"] = 3
            return image
        return Image.fromarray(pixels).convert(spec)
    dtype, channels = spec.split(" ")
    floats = pixels / 255
    if container == "numpy":
        array = pixels if dtype == "uint8" else floats.astype(dtype)
        return array[..., 0] if channels == "HW" else array[..., :int(channels)]
    tensor = torch.from_numpy(np.ascontiguousarray(np.moveaxis(pixels if dtype == "uint8" else floats, 2, 0)))
    tensor = tensor.to(getattr(torch, dtype))
    return tensor[0] if channels == "HW" else tensor[:int(channels)].contiguous()


SWEEP_IMAGES = [
    "numpy uint8 HW", "numpy uint8 1", "numpy uint8 2", "numpy uint8 3", "numpy uint8 4",
    "numpy float32 3", "numpy float64 HW", "numpy float16 4",
    "torch uint8 3", "torch uint8 4", "torch float32 1", "torch float64 HW", "torch bfloat16 3", "torch float16 2",
    "PIL RGB", "PIL RGBA", "PIL L", "PIL LA", "PIL 1", "PIL P", "PIL P transparent", "PIL CMYK", "PIL YCbCr",
    "PIL HSV", "PIL RGBX",
]


@pytest.mark.parametrize("strategy", ["original", "crop", "resize"])
@pytest.mark.parametrize("kind", SWEEP_IMAGES)
def test_every_image_kind_keeps_pixels_outside_the_hole(kind, strategy):
    image = _sweep_image(kind)
    hole = np.zeros((SWEEP_H, SWEEP_W), bool)
    hole[3:9, 4:12] = True
    hole[15:20, 22:29] = True
    result = _inpainter()(image, hole, hd_strategy=strategy, crop_margin=3, crop_trigger_size=8, resize_limit=16)
    if isinstance(image, Image.Image):
        want_mode = {"P": "RGBA" if image.has_transparency_data else "RGB"}.get(image.mode, image.mode)
        assert isinstance(result, Image.Image) and result.mode == want_mode and result.size == image.size
        image = image.convert(want_mode)
    else:
        assert type(result) is type(image) and result.shape == image.shape and result.dtype == image.dtype
    before, after = _pixels(image), _pixels(result)
    np.testing.assert_array_equal(after[~hole], before[~hole])
    if before.ndim == 3 and before.shape[2] in (2, 4) and not kind.endswith(("CMYK", "RGBX")):
        np.testing.assert_array_equal(after[..., -1], before[..., -1])
    assert (after[hole] != before[hole]).any()


def _sweep_masks():
    """(name, mask, threshold, hole) for every mask form: each must give exactly ``hole``."""
    levels = np.zeros((SWEEP_H, SWEEP_W), np.uint8)
    levels[3:9, 4:12] = 255
    levels[15:20, 22:29] = 128
    levels[10:13, 2:6] = 1
    levels[0, :3] = [127, 2, 60]
    any_level, above_127 = levels > 0, levels > 127
    grey3 = np.repeat(levels[..., None], 3, axis=2)
    return [
        ("bool", levels > 0, 0, any_level),
        ("0/1 uint8", any_level.astype(np.uint8), 0, any_level),
        ("0/255 uint8", any_level.astype(np.uint8) * 255, 0, any_level),
        ("grey uint8", levels, 0, any_level),
        ("grey uint8 threshold 127", levels, 127, above_127),
        ("grey int64", levels.astype(np.int64), 0, any_level),
        ("grey uint16 threshold 127", levels.astype(np.uint16), 127, above_127),
        ("float in [0, 1]", levels / 255, 0, any_level),
        ("float32 threshold 0.5", (levels / 255).astype(np.float32), 0.5, above_127),
        ("HxWx1", levels[..., None], 0, any_level),
        ("3-channel uint8", grey3, 0, any_level),
        ("4-channel uint8", np.concatenate([grey3, np.zeros_like(grey3[..., :1])], axis=2), 127, above_127),
        ("3-channel float", grey3 / 255, 0.5, above_127),
        ("PIL 1", Image.fromarray(any_level), 0, any_level),
        ("PIL L", Image.fromarray(levels), 0, any_level),
        ("PIL L threshold 127", Image.fromarray(levels), 127, above_127),
        ("PIL RGB", Image.fromarray(grey3), 0, any_level),
        ("PIL I;16", Image.fromarray(levels.astype(np.uint16)), 0, any_level),
        ("torch bool", torch.from_numpy(any_level), 0, any_level),
        ("torch uint8 1xHxW", torch.from_numpy(levels)[None], 127, above_127),
        ("torch float 3xHxW", torch.from_numpy(np.moveaxis(grey3, 2, 0) / 255).float(), 0, any_level),
    ]


@pytest.mark.parametrize("name,mask,threshold,hole", _sweep_masks(), ids=[m[0] for m in _sweep_masks()])
def test_every_mask_form_gives_its_hole(name, mask, threshold, hole):
    image = _sweep_image("numpy uint8 3")
    want = _inpainter()(image, hole, hd_strategy="original")
    np.testing.assert_array_equal(_inpainter()(image, mask, mask_threshold=threshold, hd_strategy="original"), want)
