"""Input handling: every kind of image and mask users pass, what comes back, and the errors for bad input."""

from __future__ import annotations

import os
import re
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from lama_fast.images import PreparedImage, check_regular_file, prepare_image, prepare_mask, read_image
from pictures import pil_image

H, W = 6, 9


def _rng(seed=0):
    return np.random.default_rng(seed)


def _hole():
    hole = torch.zeros(H, W, dtype=torch.bool)
    hole[1:4, 2:6] = True
    hole[5, 8] = True
    return hole


def _fill(prepared: PreparedImage, hole: torch.Tensor) -> torch.Tensor:
    """A result that differs from the input inside the hole: a fixed pattern of the rgb's dtype."""
    out = prepared.rgb.clone()
    pattern = torch.arange(3 * H * W).reshape(3, H, W)
    if out.dtype == torch.uint8:
        values = (pattern * 37 % 256).to(torch.uint8)
    else:
        values = ((pattern * 37 % 101) / 100).to(out.dtype)
    hole = hole.to(out.device)
    out[:, hole] = values.to(out.device)[:, hole]
    return out


def _restore_filled(prepared: PreparedImage):
    """The hole, the filled rgb (_fill) and what ``restore`` gives back for them."""
    hole = _hole()
    out = _fill(prepared, hole)
    return hole, out, prepared.restore(out, hole)


def _raises(exc, message, call, *args, **kwargs):
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        call(*args, **kwargs)


# --- images: what rgb is, what restore gives back ----------------------------------------------------

def test_numpy_rgb_uint8():
    image = _rng().integers(0, 256, (H, W, 3), dtype=np.uint8)
    prepared = prepare_image(image)
    assert prepared.size == (H, W)
    assert prepared.rgb.dtype == torch.uint8 and prepared.rgb.is_contiguous()
    np.testing.assert_array_equal(prepared.rgb.numpy(), image.transpose(2, 0, 1))
    hole, out, result = _restore_filled(prepared)
    assert isinstance(result, np.ndarray) and result.shape == (H, W, 3) and result.dtype == np.uint8
    want = image.copy()
    want[hole.numpy()] = out.numpy().transpose(1, 2, 0)[hole.numpy()]
    np.testing.assert_array_equal(result, want)
    assert not np.shares_memory(result, image)
    assert not np.shares_memory(prepared.rgb.numpy(), image)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_rgb_float_keeps_its_dtype(dtype):
    image = _rng().random((H, W, 3)).astype(dtype)
    prepared = prepare_image(image)
    assert prepared.rgb.dtype == torch.from_numpy(image).dtype
    np.testing.assert_array_equal(prepared.rgb.numpy(), image.transpose(2, 0, 1))
    hole, out, result = _restore_filled(prepared)
    assert result.dtype == dtype and result.shape == (H, W, 3)
    np.testing.assert_array_equal(result[~hole.numpy()], image[~hole.numpy()])
    np.testing.assert_array_equal(result[hole.numpy()], out.numpy().transpose(1, 2, 0)[hole.numpy()])


def test_numpy_rgba_alpha_untouched():
    image = _rng().integers(0, 256, (H, W, 4), dtype=np.uint8)
    prepared = prepare_image(image)
    np.testing.assert_array_equal(prepared.rgb.numpy(), image[..., :3].transpose(2, 0, 1))
    hole, out, result = _restore_filled(prepared)
    assert result.shape == (H, W, 4)
    np.testing.assert_array_equal(result[..., 3], image[..., 3])
    np.testing.assert_array_equal(result[~hole.numpy()], image[~hole.numpy()])
    np.testing.assert_array_equal(result[hole.numpy()][:, :3], out.numpy().transpose(1, 2, 0)[hole.numpy()])


@pytest.mark.parametrize("container, shape", [("numpy", (H, W)), ("numpy", (H, W, 1)), ("torch", (H, W)),
                                              ("torch", (1, H, W))])
def test_greyscale_uint8_hole_is_pils_grey_conversion(container, shape):
    if container == "numpy":
        image = _rng().integers(0, 256, shape, dtype=np.uint8)
    else:
        image = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    prepared = prepare_image(image)
    grey = np.asarray(image).reshape(H, W)
    np.testing.assert_array_equal(prepared.rgb.numpy(), np.stack([grey] * 3))
    hole, out, result = _restore_filled(prepared)
    assert type(result) is type(image) and result.shape == shape and result.dtype == image.dtype
    want = np.asarray(Image.fromarray(out.numpy().transpose(1, 2, 0)).convert("L"))
    np.testing.assert_array_equal(np.asarray(result).reshape(H, W), np.where(hole.numpy(), want, grey))


def test_numpy_greyscale_float_hole_is_the_luma_sum():
    image = _rng().random((H, W))
    prepared = prepare_image(image)
    hole, out, result = _restore_filled(prepared)
    r, g, b = out.numpy()
    want = np.where(hole.numpy(), 0.299 * r + 0.587 * g + 0.114 * b, image)
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, want)


def test_numpy_grey_alpha_two_channels():
    image = _rng().integers(0, 256, (H, W, 2), dtype=np.uint8)
    prepared = prepare_image(image)
    np.testing.assert_array_equal(prepared.rgb.numpy(), np.stack([image[..., 0]] * 3))
    hole = _hole()
    result = prepared.restore(_fill(prepared, hole), hole)
    np.testing.assert_array_equal(result[..., 1], image[..., 1])
    np.testing.assert_array_equal(result[~hole.numpy()], image[~hole.numpy()])


def test_numpy_read_only_and_reversed_inputs():
    image = _rng().integers(0, 256, (H, W, 3), dtype=np.uint8)
    frozen = image.copy()
    frozen.flags.writeable = False
    flipped = image[::-1, ::-1]
    for variant in (frozen, flipped):
        prepared = prepare_image(variant)
        np.testing.assert_array_equal(prepared.rgb.numpy(), variant.transpose(2, 0, 1))
        result = prepared.restore(prepared.rgb.clone(), _hole())
        np.testing.assert_array_equal(result, variant)
        assert result.flags.writeable


def test_numpy_big_endian_float_keeps_its_dtype():
    image = _rng().random((H, W, 3)).astype(">f4")
    prepared = prepare_image(image)
    assert prepared.rgb.dtype == torch.float32
    hole = _hole()
    result = prepared.restore(_fill(prepared, hole), hole)
    assert result.dtype == np.dtype(">f4")
    np.testing.assert_array_equal(result[~hole.numpy()], image[~hole.numpy()])


def test_full_hole_and_empty_hole():
    image = _rng().integers(0, 256, (H, W, 4), dtype=np.uint8)
    prepared = prepare_image(image)
    full = torch.ones(H, W, dtype=torch.bool)
    out = _fill(prepared, full)
    result = prepared.restore(out, full)
    np.testing.assert_array_equal(result[..., :3], out.numpy().transpose(1, 2, 0))
    np.testing.assert_array_equal(result[..., 3], image[..., 3])
    unchanged = prepared.restore(out, torch.zeros(H, W, dtype=torch.bool))
    np.testing.assert_array_equal(unchanged, image)
    assert unchanged is not image


# --- PIL images -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA"])
def test_pil_modes_come_back_in_their_mode(mode):
    source = Image.fromarray(_rng().integers(0, 256, (H, W, 4), dtype=np.uint8)).convert(mode)
    source.info["dpi"] = (300, 300)
    prepared = prepare_image(source)
    np.testing.assert_array_equal(prepared.rgb.numpy(), np.asarray(source.convert("RGB")).transpose(2, 0, 1))
    hole, out, result = _restore_filled(prepared)
    assert isinstance(result, Image.Image) and result.mode == mode and result.size == (W, H)
    assert result.info["dpi"] == (300, 300)
    before, after, keep = np.asarray(source), np.asarray(result), ~hole.numpy()
    np.testing.assert_array_equal(after[keep], before[keep])
    filled = Image.fromarray(out.numpy().transpose(1, 2, 0))
    if mode in ("RGB", "RGBA"):
        np.testing.assert_array_equal(after[..., :3][hole.numpy()], np.asarray(filled)[hole.numpy()])
    else:
        grey = np.asarray(filled.convert("L"))
        np.testing.assert_array_equal(after.reshape(H, W, -1)[..., 0][hole.numpy()], grey[hole.numpy()])
    if mode in ("RGBA", "LA"):
        np.testing.assert_array_equal(after[..., -1], before[..., -1])


def test_pil_bilevel_comes_back_bilevel():
    source = Image.fromarray(_rng().integers(0, 256, (H, W), dtype=np.uint8)).convert("1")
    prepared = prepare_image(source)
    np.testing.assert_array_equal(prepared.rgb.numpy()[0], np.asarray(source).astype(np.uint8) * 255)
    hole, out, result = _restore_filled(prepared)
    assert result.mode == "1"
    filled = Image.fromarray(out.numpy().transpose(1, 2, 0)).convert("L").convert("1", dither=Image.Dither.NONE)
    np.testing.assert_array_equal(np.asarray(result), np.where(hole.numpy(), np.asarray(filled), np.asarray(source)))


@pytest.mark.parametrize("transparent,want_mode", [(False, "RGB"), (True, "RGBA")])
def test_pil_palette_comes_back_as_rgb_or_rgba(transparent, want_mode):
    source = Image.fromarray(_rng().integers(0, 256, (H, W, 3), dtype=np.uint8)).convert("P")
    if transparent:
        source.info["transparency"] = 0
    prepared = prepare_image(source)
    hole = _hole()
    result = prepared.restore(_fill(prepared, hole), hole)
    assert result.mode == want_mode
    keep = ~hole.numpy()
    np.testing.assert_array_equal(np.asarray(result)[keep], np.asarray(source.convert(want_mode))[keep])


def test_pil_cmyk_hole_is_pils_conversion_of_the_rgb_result():
    source = Image.fromarray(_rng().integers(0, 256, (H, W, 3), dtype=np.uint8)).convert("CMYK")
    prepared = prepare_image(source)
    np.testing.assert_array_equal(prepared.rgb.numpy(), np.asarray(source.convert("RGB")).transpose(2, 0, 1))
    hole, out, result = _restore_filled(prepared)
    assert result.mode == "CMYK"
    want = np.asarray(Image.fromarray(out.numpy().transpose(1, 2, 0)).convert("CMYK"))
    np.testing.assert_array_equal(np.asarray(result), np.where(hole.numpy()[..., None], want, np.asarray(source)))


@pytest.mark.parametrize(
    "mode,message",
    [
        ("I;16", "image has PIL mode 'I;16', a 16-bit mode; lama_fast takes 8 bits per channel: convert it first, "
                 "e.g. Image.fromarray((np.asarray(img) >> 8).astype(np.uint8)), or pass a float array in [0, 1]"),
        ("I", "image has PIL mode 'I', a 32-bit integer mode; lama_fast takes 8 bits per channel: "
              "convert it to 8 bits, or pass a float array in [0, 1]"),
        ("RGBa", "image has PIL mode 'RGBa', which is not supported; accepted modes: "
                 "1, L, LA, P, PA, RGB, RGBA, RGBX, CMYK, YCbCr, HSV"),
    ],
)
def test_pil_wide_and_unknown_modes_are_refused(mode, message):
    _raises(ValueError, message, prepare_image, Image.new(mode, (W, H)))


def test_pil_lazy_image_of_a_broken_file(tmp_path):
    path = tmp_path / "truncated.png"
    Image.fromarray(_rng().integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:300])
    for call, what in ((prepare_image, "image"), (lambda m: prepare_mask(m, (64, 64)), "mask")):
        with Image.open(path) as lazy:
            with pytest.raises(ValueError, match=f"^{what} could not be decoded: "):
                call(lazy)


def test_pil_empty_image():
    _raises(ValueError, "image is empty: PIL size 0x4", prepare_image, Image.new("RGB", (0, 4)))


# --- torch tensors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("channels", [3, 4])
def test_torch_chw_keeps_dtype_and_alpha(dtype, channels):
    source = torch.rand(channels, H, W, generator=torch.Generator().manual_seed(0))
    image = (source * 255).to(dtype) if dtype == torch.uint8 else source.to(dtype)
    prepared = prepare_image(image)
    assert prepared.rgb.dtype == dtype and prepared.rgb.shape == (3, H, W)
    assert torch.equal(prepared.rgb, image[:3])
    hole, out, result = _restore_filled(prepared)
    assert torch.is_tensor(result) and result.dtype == dtype and result.shape == image.shape
    assert torch.equal(result[:, ~hole], image[:, ~hole])
    assert torch.equal(result[:3, hole], out[:, hole])
    if channels == 4:
        assert torch.equal(result[3], image[3])
    result[:] = 0
    assert image.abs().sum() > 0  # the result is new memory


def test_torch_requires_grad_input():
    image = torch.rand(3, H, W, requires_grad=True)
    prepared = prepare_image(image)
    assert not prepared.rgb.requires_grad
    assert torch.equal(prepared.restore(prepared.rgb, _hole()), image.detach())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("channels", [1, 4])
def test_torch_cuda_image_stays_on_its_device(dtype, channels):
    source = torch.rand(channels, H, W, generator=torch.Generator().manual_seed(2))
    on_cpu = (source * 255).to(dtype) if dtype == torch.uint8 else source
    image = on_cpu.to("cuda")
    prepared = prepare_image(image)
    assert prepared.rgb.device == image.device
    mask = prepare_mask(image[0] > 0.5 if dtype != torch.uint8 else image[0] > 127, (H, W))
    assert mask.device.type == "cpu"
    hole = _hole()  # on the CPU, as prepare_mask gives it
    out = _fill(prepared, hole)
    result = prepared.restore(out, hole)
    assert result.device == image.device and result.dtype == dtype and result.shape == image.shape
    want = prepare_image(on_cpu).restore(out.cpu(), hole)
    assert torch.equal(result.cpu(), want)


# --- bad images ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "image,exc,message",
    [
        ("photo.jpg", TypeError, "image must be a numpy array, a PIL image or a torch tensor, got str"),
        (np.zeros((H, W, 3), bool), TypeError,
         "image must be uint8, or floating point with values in [0, 1]; got dtype bool"),
        (np.zeros((H, W, 3), np.int16), TypeError,
         "image must be uint8, or floating point with values in [0, 1]; got dtype int16"),
        (np.zeros((H, W, 3), np.int32), TypeError,
         "image must be uint8, or floating point with values in [0, 1]; got dtype int32"),
        (np.zeros((H, W, 3), np.complex64), TypeError,
         "image must be uint8, or floating point with values in [0, 1]; got dtype complex64"),
        (np.zeros((H, W, 3), object), TypeError,
         "image must be uint8, or floating point with values in [0, 1]; got dtype object"),
        (np.zeros((H, W, 3), np.uint16), TypeError,
         "image must be uint8, or floating point with values in [0, 1]; got dtype uint16 "
         "(16-bit data: pass image / 65535 as float32)"),
        (torch.zeros(3, H, W, dtype=torch.int64), TypeError,
         "image must be uint8, or floating point with values in [0, 1]; got dtype torch.int64"),
        (torch.zeros(3, H, W, dtype=torch.bool), TypeError,
         "image must be uint8, or floating point with values in [0, 1]; got dtype torch.bool"),
        (np.zeros((H, W, 5), np.uint8), ValueError,
         "image must be an HxW, HxWx1, HxWx2, HxWx3 or HxWx4 array, got shape (6, 9, 5)"),
        (np.zeros((3, H, W), np.uint8), ValueError,
         "image must be an HxW, HxWx1, HxWx2, HxWx3 or HxWx4 array, got shape (3, 6, 9); "
         "a CxHxW array? pass image.transpose(1, 2, 0)"),
        (np.zeros(W, np.uint8), ValueError, "image must be an HxW, HxWx1, HxWx2, HxWx3 or HxWx4 array, got shape (9,)"),
        (torch.zeros(H, W, 3), ValueError,
         "image must be a CxHxW tensor with C in 1, 2, 3, 4, or HxW; got shape (6, 9, 3); "
         "an HxWxC tensor? pass image.permute(2, 0, 1)"),
        (torch.zeros(2, 3, H, W), ValueError,
         "image is a batch of shape (2, 3, 6, 9); pass one CxHxW image, or use Inpainter.inpaint_batch for batches"),
        (np.zeros((0, W, 3), np.uint8), ValueError, "image is empty: shape (0, 9, 3)"),
        (np.zeros((H, 0), np.float32), ValueError, "image is empty: shape (6, 0)"),
        (torch.zeros(3, 0, 0), ValueError, "image is empty: shape (3, 0, 0)"),
        (np.full((H, W, 3), np.nan, np.float32), ValueError, "image contains NaN values"),
        (torch.tensor([[0.5, float("nan")], [0.0, 1.0]]), ValueError, "image contains NaN values"),
        (torch.tensor([[0.5, float("inf")], [0.0, 1.0]]), ValueError, "image contains infinite values"),
        (torch.tensor([[0.5, -0.25], [0.0, 1.5]], dtype=torch.float64), ValueError,
         "image values must lie in [0, 1], found values in [-0.25, 1.5]"),
        (np.full((H, W, 3), 254.0), ValueError,
         "image values must lie in [0, 1], found values in [254, 254] (values in [0, 255]? divide the image by 255)"),
    ],
)
def test_bad_images_are_named(image, exc, message):
    _raises(exc, message, prepare_image, image)


# --- masks -----------------------------------------------------------------------------------------------------

def _grid():
    """An HxW uint8 grid with 0, 1, 127, 128 and 255 in it."""
    grid = np.zeros((H, W), np.uint8)
    grid[0, :5] = [0, 1, 127, 128, 255]
    grid[2:4, 3:7] = 255
    return grid


def test_mask_bool():
    mask = _grid() > 0
    hole = prepare_mask(mask, (H, W))
    assert hole.dtype == torch.bool and hole.shape == (H, W) and hole.device.type == "cpu"
    np.testing.assert_array_equal(hole.numpy(), mask)
    assert not np.shares_memory(hole.numpy(), mask)
    # bool masks are used as they are: the threshold does not apply
    np.testing.assert_array_equal(prepare_mask(mask, (H, W), threshold=200).numpy(), mask)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64, np.uint16, np.float32, np.float64])
def test_mask_zero_one_and_zero_255(dtype):
    ones = (_grid() > 0).astype(dtype)
    np.testing.assert_array_equal(prepare_mask(ones, (H, W)).numpy(), _grid() > 0)
    if dtype not in (np.float32, np.float64):
        np.testing.assert_array_equal(prepare_mask(ones * 255, (H, W)).numpy(), _grid() > 0)


def test_mask_greyscale_default_is_any_nonzero_and_threshold_is_strict():
    grid = _grid()
    np.testing.assert_array_equal(prepare_mask(grid, (H, W)).numpy(), grid > 0)
    np.testing.assert_array_equal(prepare_mask(grid, (H, W), threshold=127).numpy(), grid > 127)
    np.testing.assert_array_equal(prepare_mask(grid, (H, W), threshold=127.5).numpy(), grid > 127)
    assert prepare_mask(grid, (H, W), threshold=255).sum() == 0


def test_mask_float_threshold_in_its_own_units():
    values = _grid() / 255
    np.testing.assert_array_equal(prepare_mask(values, (H, W), threshold=0.5).numpy(), _grid() >= 128)
    np.testing.assert_array_equal(prepare_mask(torch.from_numpy(values).float(), (H, W)).numpy(), _grid() > 0)


def test_mask_three_and_four_channels_reduce_like_pils_convert_L():
    rgb = _rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)
    rgb[0, 0] = [1, 0, 0]  # grey level 0 in PIL's conversion: not a hole
    rgb[0, 1] = [0, 0, 3]  # grey level 0 as well
    rgb[0, 2] = [0, 2, 0]  # grey level 1
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    assert list(grey[0, :3]) == [0, 0, 1]
    np.testing.assert_array_equal(prepare_mask(rgb, (H, W)).numpy(), grey > 0)
    np.testing.assert_array_equal(prepare_mask(rgb, (H, W), threshold=100).numpy(), grey > 100)
    rgba = np.concatenate([rgb, np.zeros((H, W, 1), np.uint8)], axis=2)
    np.testing.assert_array_equal(prepare_mask(rgba, (H, W)).numpy(), grey > 0)  # alpha ignored
    np.testing.assert_array_equal(prepare_mask(Image.fromarray(rgb), (H, W)).numpy(), grey > 0)
    np.testing.assert_array_equal(prepare_mask(torch.from_numpy(rgb).permute(2, 0, 1), (H, W)).numpy(), grey > 0)


def test_mask_three_channels_other_dtypes_take_the_channel_maximum():
    values = np.zeros((H, W, 3), np.float32)
    values[1, 2, 2] = 0.5
    values[4, 4] = [0.1, 0.9, 0.2]
    want = np.zeros((H, W), bool)
    want[1, 2] = want[4, 4] = True
    np.testing.assert_array_equal(prepare_mask(values, (H, W)).numpy(), want)
    np.testing.assert_array_equal(prepare_mask(values, (H, W), threshold=0.6).numpy(), values.max(axis=2) > 0.6)


@pytest.mark.parametrize("shape", [(H, W, 1), (H, W, 2)])
def test_mask_single_channel_layouts(shape):
    mask = np.zeros(shape, np.uint8)
    mask[..., 0] = _grid()
    if shape[2] == 2:
        mask[..., 1] = 255  # alpha ignored
    np.testing.assert_array_equal(prepare_mask(mask, (H, W)).numpy(), _grid() > 0)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I"])
def test_mask_pil_modes(mode):
    grid = _grid()
    image = pil_image(grid.astype(np.uint16) * 257 if mode == "I;16" else grid, mode)
    assert image.mode == mode
    want = grid >= 128 if mode == "1" else grid > 0
    np.testing.assert_array_equal(prepare_mask(image, (H, W)).numpy(), want)


@pytest.mark.parametrize("shape", [(H, W), (1, H, W)])
def test_mask_torch(shape):
    mask = torch.from_numpy(_grid()).reshape(shape)
    np.testing.assert_array_equal(prepare_mask(mask, (H, W)).numpy(), _grid() > 0)
    np.testing.assert_array_equal(prepare_mask(mask.bool(), (H, W)).numpy(), _grid() > 0)
    np.testing.assert_array_equal(prepare_mask(mask.bfloat16() / 255, (H, W), 0.5).numpy(), _grid() > 127)


@pytest.mark.parametrize(
    "mask,threshold,exc,message",
    [
        (np.zeros((W, H), np.uint8), 0, ValueError, "mask is 6x9 but the image is 9x6"),
        (torch.zeros(1, H + 1, W), 0, ValueError, "mask is 9x7 but the image is 9x6"),
        (Image.new("L", (W, W)), 0, ValueError, "mask is 9x9 but the image is 9x6"),
        (np.zeros((0, W), np.uint8), 0, ValueError, "mask is empty: shape (0, 9)"),
        (torch.zeros(1, H, 0), 0, ValueError, "mask is empty: shape (1, 6, 0)"),
        (np.full((H, W), np.nan), 0, ValueError, "mask contains NaN values"),
        (torch.full((H, W), float("nan")), 0, ValueError, "mask contains NaN values"),
        (np.zeros((H, W), np.complex64), 0, TypeError,
         "mask must be bool, integer or floating point; got dtype complex64"),
        (np.zeros((H, W), object), 0, TypeError, "mask must be bool, integer or floating point; got dtype object"),
        ([[0, 1]], 0, TypeError, "mask must be a numpy array, a PIL image or a torch tensor, got list"),
        (np.zeros((H, W, 5), np.uint8), 0, ValueError,
         "mask must be an HxW, HxWx1, HxWx2, HxWx3 or HxWx4 array, got shape (6, 9, 5)"),
        (np.zeros((1, H, W), np.uint8), 0, ValueError,
         "mask must be an HxW, HxWx1, HxWx2, HxWx3 or HxWx4 array, got shape (1, 6, 9); "
         "a CxHxW array? pass mask.transpose(1, 2, 0)"),
        (torch.zeros(H, W, 1), 0, ValueError,
         "mask must be an HxW or CxHxW tensor with C in 1, 2, 3, 4; got shape (6, 9, 1); "
         "an HxWxC tensor? pass mask.permute(2, 0, 1)"),
        (torch.zeros(1, 1, H, W), 0, ValueError, "mask is a batch of shape (1, 1, 6, 9); pass one HxW or 1xHxW mask"),
        (np.zeros((H, W), np.uint8), "128", TypeError, "mask threshold must be a number, got str"),
        (np.zeros((H, W), np.uint8), float("nan"), ValueError, "mask threshold is NaN"),
    ],
)
def test_bad_masks_are_named(mask, threshold, exc, message):
    _raises(exc, message, prepare_mask, mask, (H, W), threshold)


def test_restore_checks_what_it_is_given():
    prepared = prepare_image(np.zeros((H, W, 3), np.uint8))
    _raises(ValueError, "rgb_out must be a torch.uint8 tensor of shape (3, 6, 9), got torch.float32 (3, 6, 9)",
            prepared.restore, prepared.rgb.float(), _hole())
    _raises(ValueError, "hole must be a torch.bool tensor of shape (6, 9), got torch.uint8 (6, 9)",
            prepared.restore, prepared.rgb, _hole().to(torch.uint8))


# --- files ----------------------------------------------------------------------------------------------------

def test_read_image_applies_exif_orientation(tmp_path):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = 255  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)
    image = read_image(path)
    assert image.size == (20, 40) and image.mode == "RGB"
    array = np.asarray(image).astype(int)
    assert array[:20].mean() > 200 and array[20:].mean() < 50  # the white half is now on top
    assert image.getexif().get(0x0112) is None


def test_read_image_is_fully_loaded(tmp_path):
    path = tmp_path / "plain.png"
    Image.fromarray(np.full((3, 4, 3), 7, np.uint8)).save(path)
    image = read_image(path)
    path.unlink()
    assert np.asarray(image).sum() == 7 * 36


def _png_48bit(width, height):
    """The bytes of an RGB PNG with 16 bits per channel, written by hand."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + np.full((width, 3), 300 * (y + 1), ">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_read_image_refuses_16_bit_pngs(tmp_path):
    grey = tmp_path / "grey16.png"
    Image.fromarray(np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000).save(grey)
    colour = tmp_path / "rgb48.png"
    colour.write_bytes(_png_48bit(4, 3))
    _raises(ValueError, f"image {grey} is a 16-bit image (PIL mode 'I;16'); lama_fast takes 8 bits per channel: "
            f"convert it first, e.g. `magick {grey} -depth 8 out.png`", read_image, grey)
    _raises(ValueError, f"image {colour} is a 16-bit image (PIL mode 'RGB', stored as 'RGB;16B'); lama_fast takes "
            f"8 bits per channel: convert it first, e.g. `magick {colour} -depth 8 out.png`", read_image, colour)
    _raises(ValueError, f"mask {colour} is a 16-bit image (PIL mode 'RGB', stored as 'RGB;16B'); lama_fast takes "
            f"8 bits per channel: convert it first, e.g. `magick {colour} -depth 8 out.png`",
            read_image, colour, "mask")


def test_read_image_takes_16_bit_greyscale_masks(tmp_path):
    path = tmp_path / "mask16.png"
    values = np.zeros((H, W), np.uint16)
    values[2, 3] = 1  # would vanish if the low byte were dropped
    Image.fromarray(values).save(path)
    mask = read_image(path, "mask")
    assert mask.mode.startswith("I")
    want = np.zeros((H, W), bool)
    want[2, 3] = True
    np.testing.assert_array_equal(prepare_mask(mask, (H, W)).numpy(), want)


def test_read_image_missing_and_unreadable(tmp_path):
    missing = tmp_path / "missing.png"
    _raises(FileNotFoundError, f"image {missing} does not exist", read_image, missing)
    _raises(FileNotFoundError, f"mask {missing} does not exist", read_image, missing, "mask")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    _raises(ValueError, f"cannot read image {junk}: cannot identify image file '{junk}'", read_image, junk)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(_rng().integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ValueError, match=f"^cannot read image {re.escape(str(truncated))}: "):
        read_image(truncated)


def test_read_image_refuses_paths_that_are_not_regular_files_without_opening_them(tmp_path):
    import signal
    import socket

    def on_alarm(signum, frame):
        pytest.fail("read_image blocked on a FIFO")

    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(20)
    try:
        _raises(ValueError, f"image {fifo} is not a regular file (a FIFO); give an image file", read_image, fifo)
        _raises(ValueError, f"mask {fifo} is not a regular file (a FIFO); give an image file",
                read_image, fifo, "mask")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    _raises(ValueError, "image /dev/zero is not a regular file (a character device); give an image file",
            read_image, "/dev/zero")
    _raises(ValueError, f"image {tmp_path} is not a regular file (a directory); give an image file",
            read_image, tmp_path)
    with socket.socket(socket.AF_UNIX) as server:
        sock = tmp_path / "s.png"
        server.bind(str(sock))
        _raises(ValueError, f"image {sock} is not a regular file (a socket); give an image file", read_image, sock)
    # A link is followed: to an image it reads, to a FIFO it is refused.
    image = tmp_path / "a.png"
    Image.new("RGB", (3, 2)).save(image)
    (tmp_path / "to_image.png").symlink_to(image)
    (tmp_path / "to_fifo.png").symlink_to(fifo)
    assert read_image(tmp_path / "to_image.png").size == (3, 2)
    _raises(ValueError, f"image {tmp_path / 'to_fifo.png'} is not a regular file (a FIFO); give an image file",
            read_image, tmp_path / "to_fifo.png")
    _raises(FileNotFoundError, f"checkpoint {tmp_path / 'no.ckpt'} does not exist",
            check_regular_file, tmp_path / "no.ckpt", "checkpoint", "a checkpoint")
