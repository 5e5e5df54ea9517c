"""The refinement (``Inpainter.refine``, ``lama_fast.refine``): its pyramid pieces against independent
float64 computations, the golden case made with the original ``refine_predict``, the px_budget resize,
the single-scale case, and bad settings."""

from __future__ import annotations

import dataclasses
import math
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import lama_fast.inpaint
from configs import TINY_CONFIG
from model_cases import saved_generator
from lama_fast import Inpainter
from lama_fast.model.random import random_generator
from lama_fast.refine import (
    ReferenceRefineModel, RefineModel, RefineSettings, pyramid, refine_model, refine_tensors, resize_input,
)

GOLDEN_TOLERANCE = 1e-6


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These shapes are tiny: with several intra-op threads on a busy machine the runs mostly wait on
    each other (tens of times slower), so this module runs on one thread and gives the count back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# --- independent float64 references (numpy, loops) ---------------------------------------------

def blur_reference(x: np.ndarray) -> np.ndarray:
    """5x5 Gaussian (sigma 1) of an N×C×H×W float64 array: the 2-D outer-product kernel, numpy reflect pad."""
    k1 = np.array([math.exp(-(i * i) / 2.0) for i in range(-2, 3)])
    k2 = np.outer(k1, k1) / k1.sum() ** 2
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), mode="reflect")
    height, width = x.shape[2:]
    out = np.zeros_like(x)
    for a in range(5):
        for b in range(5):
            out += k2[a, b] * padded[:, :, a:a + height, b:b + width]
    return out


def bilinear_reference(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resize with align_corners=False of an N×C×H×W array, from the sampling formula:
    source = max((dst + 0.5) * in / out - 0.5, 0), neighbours clamped at the last pixel."""

    def axis(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, rl = axis(x.shape[2], out_h)
    c0, c1, cl = axis(x.shape[3], out_w)
    top = x[:, :, r0][:, :, :, c0] * (1 - cl) + x[:, :, r0][:, :, :, c1] * cl
    bottom = x[:, :, r1][:, :, :, c0] * (1 - cl) + x[:, :, r1][:, :, :, c1] * cl
    return top * (1 - rl)[:, None] + bottom * rl[:, None]


def erosion_reference(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Minimum over the in-image pixels under the kernel's ones (origin at the centre), pixel by pixel."""
    height, width = mask.shape
    kh, kw = kernel.shape
    out = np.empty_like(mask)
    for i in range(height):
        for j in range(width):
            values = [mask[i + a - kh // 2, j + b - kw // 2]
                      for a in range(kh) for b in range(kw)
                      if kernel[a, b] and 0 <= i + a - kh // 2 < height and 0 <= j + b - kw // 2 < width]
            out[i, j] = min(values)
    return out


# OpenCV's getStructuringElement(MORPH_ELLIPSE, (15, 15)), worked out by hand from its rule
# (r = c = 7, row i: |j - 7| <= round(sqrt(49 - (i - 7)^2))): half-widths 0, 4, 5, 6, 6, 7, 7, 7, ...
ELLIPSE_15 = [
    "000000010000000",
    "000111111111000",
    "001111111111100",
    "011111111111110",
    "011111111111110",
    "111111111111111",
    "111111111111111",
    "111111111111111",
    "111111111111111",
    "111111111111111",
    "011111111111110",
    "011111111111110",
    "001111111111100",
    "000111111111000",
    "000000010000000",
]
# The familiar 5x5 one.
ELLIPSE_5 = ["00100", "11111", "11111", "11111", "00100"]


def _pattern(rows) -> torch.Tensor:
    return torch.tensor([[c == "1" for c in row] for row in rows])


# --- pyramid pieces ----------------------------------------------------------------------------

def test_gaussian_blur_is_the_5x5_sigma_1_kernel_with_reflected_borders():
    x = torch.rand(2, 3, 9, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = pyramid.gaussian_blur(x)
    np.testing.assert_allclose(got.numpy(), blur_reference(x.numpy()), rtol=0, atol=1e-14)


@pytest.mark.parametrize("h,w", [(13, 17), (16, 20), (6, 5)])
def test_pyrdown_is_blur_then_bilinear_halving(h, w):
    x = torch.rand(1, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(h * w))
    got = pyramid.pyrdown(x)
    assert got.shape == (1, 3, h // 2, w // 2)
    want = bilinear_reference(blur_reference(x.numpy()), h // 2, w // 2)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-14)


def _random_mask(h, w, seed, density=0.6):
    return (torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(seed)) < density).double()


def test_pyrdown_mask_without_blur_keeps_only_full_blocks_or_any_pixel():
    mask = _random_mask(12, 16, 1)
    blocks = mask[0, 0].reshape(6, 2, 8, 2).permute(0, 2, 1, 3).reshape(6, 8, 4)
    sure = pyramid.pyrdown_mask(mask, blur_mask=False, round_up=False)
    assert torch.equal(sure[0, 0], blocks.min(dim=2).values)
    loose = pyramid.pyrdown_mask(mask, blur_mask=False, round_up=True)
    assert torch.equal(loose[0, 0], blocks.max(dim=2).values)


def test_pyrdown_mask_with_blur_rounds_up_anything_touched():
    mask = torch.zeros(1, 1, 21, 26, dtype=torch.float64)
    mask[0, 0, 9, 11] = 1.0
    mask[0, 0, 2:4, 20:23] = 128 / 255  # a grey hole pixel counts like a white one
    got = pyramid.pyrdown_mask(mask)
    want = (bilinear_reference(blur_reference(mask.numpy()), 10, 13) >= 1e-8).astype(np.float64)
    np.testing.assert_array_equal(got.numpy(), want)
    assert set(got.unique().tolist()) == {0.0, 1.0} and got.sum() > 4


def test_mask_thresholds_follow_eps():
    values = torch.tensor([0.0, 5e-9, 1e-8, 0.5, 1 - 2e-8, 1 - 1e-9, 1.0], dtype=torch.float64)
    assert pyramid.threshold(values).tolist() == [0, 0, 1, 1, 1, 1, 1]
    assert pyramid.threshold(values, round_up=False).tolist() == [0, 0, 0, 0, 0, 1, 1]


@pytest.mark.parametrize("size,rows", [(15, ELLIPSE_15), (5, ELLIPSE_5)])
def test_ellipse_is_opencvs(size, rows):
    assert torch.equal(pyramid.ellipse(size), _pattern(rows))
    if size == 15:
        assert torch.equal(pyramid.ELLIPSE, _pattern(rows))


@pytest.mark.parametrize("h,w,kernel", [
    (11, 13, ELLIPSE_15),          # the image is smaller than the element: only in-image pixels count
    (20, 23, ELLIPSE_15),
    (9, 10, ["010", "111", "010"]),
    (7, 9, ["00100", "11111", "01110"]),
])
def test_erosion_is_the_minimum_over_the_element_inside_the_image(h, w, kernel):
    gen = torch.Generator().manual_seed(h * w)
    kern = _pattern(kernel)
    grey = torch.rand(1, 1, h, w, dtype=torch.float64, generator=gen)
    want = erosion_reference(grey[0, 0].numpy(), kern.numpy())
    np.testing.assert_array_equal(pyramid.erode(grey, kern)[0, 0].numpy(), want)
    binary = (torch.rand(1, 1, h, w, generator=gen) < 0.85).double()
    want = erosion_reference(binary[0, 0].numpy(), kern.numpy())
    np.testing.assert_array_equal(pyramid.erode_mask(binary, kern)[0, 0].numpy(), want)


def test_erosion_keeps_a_disc_centre_and_drops_small_holes():
    mask = torch.zeros(1, 1, 40, 40, dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.arange(40), torch.arange(40), indexing="ij")
    mask[0, 0] = (((yy - 20) ** 2 + (xx - 20) ** 2) <= 81).double()  # radius 9
    eroded = pyramid.erode_mask(mask)
    assert eroded[0, 0, 20, 20] == 1 and eroded.sum() < mask.sum() and eroded[0, 0, 20, 27] == 0
    small = torch.zeros(1, 1, 40, 40, dtype=torch.float64)
    small[0, 0, 10:20, 10:20] = 1
    assert pyramid.erode_mask(small).sum() == 0


@pytest.mark.parametrize("h,w,budget,want", [
    (150, 200, 1_800_000, None),
    (150, 200, 30_000, None),
    (150, 200, 20_000, (122, 163)),   # ratio sqrt(2/3) = 0.8165: 122.47, 163.30
    (3000, 2000, 1_800_000, (1643, 1095)),  # ratio sqrt(0.3) = 0.5477: 1643.17, 1095.45
])
def test_budget_size(h, w, budget, want):
    assert pyramid.budget_size(h, w, budget) == want


def test_budget_resize_is_bilinear_and_rounds_the_mask_up():
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 20, 28, dtype=torch.float64, generator=gen)
    mask = torch.zeros(1, 1, 20, 28, dtype=torch.float64)
    mask[0, 0, 5:9, 7:15] = 1
    small_image, small_mask = pyramid.budget_resize(image, mask, (15, 21))
    np.testing.assert_allclose(small_image.numpy(), bilinear_reference(image.numpy(), 15, 21), rtol=0, atol=1e-14)
    want = bilinear_reference(mask.numpy(), 15, 21)
    np.testing.assert_array_equal(small_mask.numpy(), np.where(want > 1e-8, 1.0, want))


@pytest.mark.parametrize("h,w,min_side,max_scales,want", [
    (150, 200, 64, 3, 2),       # log2(150 / 64) = 1.23
    (300, 512, 512, 3, 1),      # below min_side: one scale
    (2048, 3000, 512, 3, 3),    # log2(4) = 2
    (4096, 4096, 512, 3, 3),    # log2(8) = 3, capped
    (717, 1000, 512, 3, 1),     # log2(1.400) = 0.486 rounds down
    (725, 1000, 512, 3, 2),     # log2(1.416) = 0.502 rounds up
    (1024, 768, 512, 1, 1),
])
def test_scale_count(h, w, min_side, max_scales, want):
    assert pyramid.scale_count(h, w, min_side, max_scales) == want
    sizes = pyramid.scale_sizes(h, w, min_side, max_scales)
    assert len(sizes) == want and sizes[-1] == (h, w)
    assert all(small == (big[0] // 2, big[1] // 2) for small, big in zip(sizes, sizes[1:]))


def test_pyramid_lists_lowest_resolution_first():
    gen = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 34, 45, dtype=torch.float64, generator=gen)
    mask = _random_mask(34, 45, 6, density=0.1)
    images, masks = pyramid.build_pyramid(image, mask, 8, 3)
    assert [tuple(i.shape[2:]) for i in images] == [(8, 11), (17, 22), (34, 45)]
    assert images[-1] is image and masks[-1] is mask
    assert torch.equal(images[1], pyramid.pyrdown(image)) and torch.equal(masks[0], pyramid.pyrdown_mask(masks[1]))


@pytest.mark.parametrize("h,w,modulo", [(13, 17, 8), (16, 16, 8), (10, 21, 16), (9, 9, 4)])
def test_pad_to_modulo_is_torch_reflect_at_bottom_right(h, w, modulo):
    x = np.arange(2 * h * w, dtype=np.float64).reshape(1, 2, h, w)
    want = np.pad(x, ((0, 0), (0, 0), (0, -h % modulo), (0, -w % modulo)), mode="reflect")
    np.testing.assert_array_equal(pyramid.pad_to_modulo(torch.from_numpy(x), modulo).numpy(), want)


# --- settings and backends -----------------------------------------------------------------------

def test_settings_defaults_are_the_released_ones():
    settings = RefineSettings()
    assert dataclasses.asdict(settings) == {"n_iters": 15, "lr": 0.002, "min_side": 512, "max_scales": 3,
                                            "px_budget": 1_800_000, "modulo": 8}
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.n_iters = 3  # type: ignore[misc]
    assert RefineSettings(n_iters=np.int64(4)).n_iters == 4 and type(RefineSettings(n_iters=np.int64(4)).n_iters) is int


@pytest.mark.parametrize("change,message", [
    ({"n_iters": 0}, "n_iters must be an integer >= 1, got 0"),
    ({"n_iters": True}, "n_iters must be an integer >= 1, got True"),
    ({"n_iters": 2.0}, "n_iters must be an integer >= 1, got 2.0"),
    ({"lr": 0}, "lr must be a finite number > 0, got 0"),
    ({"lr": -0.1}, "lr must be a finite number > 0, got -0.1"),
    ({"lr": float("nan")}, "lr must be a finite number > 0, got nan"),
    ({"lr": float("inf")}, "lr must be a finite number > 0, got inf"),
    ({"lr": True}, "lr must be a finite number > 0, got True"),
    ({"lr": "0.1"}, "lr must be a finite number > 0, got '0.1'"),
    ({"min_side": 0}, "min_side must be an integer >= 1, got 0"),
    ({"max_scales": 0}, "max_scales must be an integer >= 1, got 0"),
    ({"px_budget": -5}, "px_budget must be an integer >= 1, got -5"),
    ({"modulo": 0}, "modulo must be an integer >= 1, got 0"),
    ({"modulo": None}, "modulo must be an integer >= 1, got None"),
])
def test_bad_settings(change, message, tiny_inpainter):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        RefineSettings(**change)
    image, mask = _sample()
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        tiny_inpainter.refine(image, mask, **change)


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_unsupported_backend(backend):
    generator = random_generator(TINY_CONFIG, seed=0)
    message = f"refine runs on the reference and cpu backends, not on {backend!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        refine_model(generator, backend)
    image, mask = _sample()
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Inpainter(generator, backend=backend).refine(image, mask)


def test_reference_model_leaves_the_generator_as_it_was():
    generator = random_generator(TINY_CONFIG, seed=2).double().train()
    frozen = generator.model[1]  # the first FFC layer
    frozen.requires_grad_(False)
    flags = [p.requires_grad for p in generator.parameters()]
    assert any(flags) and not all(flags)
    model = ReferenceRefineModel(generator)
    assert isinstance(model, RefineModel) and model.dtype == torch.float64 and model.device.type == "cpu"
    assert not generator.training and not any(p.requires_grad for p in generator.parameters())
    image, mask = _tensor_sample(24, 32)
    result = refine_tensors(model, image, mask, RefineSettings(n_iters=3, min_side=8, max_scales=2))
    assert len(result.scale_sizes) == 2 and result.losses[1] > 0
    assert [p.requires_grad for p in generator.parameters()] == flags
    assert all(m.training for m in generator.modules())
    assert all(p.grad is None for p in generator.parameters())


def test_reference_model_split_is_at_the_first_residual_block():
    generator = random_generator(TINY_CONFIG, seed=0).double()
    model = ReferenceRefineModel(generator)
    try:
        first = len(model.front_layers)
        assert type(generator.model[first]).__name__ == "FFCResnetBlock"
        assert all(type(m).__name__ != "FFCResnetBlock" for m in model.front_layers)
        x = torch.rand(1, 4, 16, 24, dtype=torch.float64)
        with torch.no_grad():
            z1, z2 = model.front(x)
            assert z1.shape == (1, 8, 4, 6) and z2.shape == (1, 24, 4, 6)  # ngf 8 x 4: 25% local, 75% global
            assert torch.equal(model.rear(z1, z2), generator(x))
    finally:
        model.close()

    class Wrapper(torch.nn.Module):  # keeps the generator as ``.module``, as CUDA graphs do
        def __init__(self, module):
            super().__init__()
            self.module = module

    wrapped = ReferenceRefineModel(Wrapper(generator))
    assert wrapped.generator is generator and len(wrapped.front_layers) == first
    wrapped.close()
    with pytest.raises(ValueError, match="^refine on the reference backend needs a LaMa generator with a 'model' "
                                         "Sequential; got Linear$"):
        ReferenceRefineModel(torch.nn.Linear(2, 2))


# --- shared cases ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_inpainter():
    """Reference backend, float64, a small generator of the released layout (two downsamplings)."""
    return Inpainter(random_generator(TINY_CONFIG, seed=0).double().eval(), backend="reference")


def _sample(h=24, w=32, seed=0, hole=(slice(6, 18), slice(8, 26))):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[hole] = 255
    return image, mask


def _tensor_sample(h, w, seed=0):
    image, mask = _sample(h, w, seed, hole=(slice(h // 4, 3 * h // 4), slice(w // 5, 4 * w // 5)))
    return (torch.from_numpy(image).permute(2, 0, 1)[None].double() / 255,
            torch.from_numpy(mask > 0)[None, None].double())


def _truncate(x: torch.Tensor) -> np.ndarray:
    """A 1×3×H×W float result as predict.py writes it: x 255, clipped, truncated, H×W×3 uint8."""
    return (x[0].permute(1, 2, 0) * 255).clamp(0, 255).to(torch.uint8).numpy()


# --- the golden case: the original refine_predict in float64 ------------------------------------



@pytest.fixture(scope="module")
def golden_reference_run(refine_case):
    """Inpainter.refine on the golden uint8 image and mask (reference backend, float64, the case's
    settings), and the float result refine_tensors gave it on the way (one run serves both checks)."""
    inpainter = Inpainter(saved_generator(refine_case, torch.float64), backend="reference")
    seen = []

    def recording(*args, **kwargs):
        seen.append(refine_tensors(*args, **kwargs))
        return seen[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lama_fast.inpaint, "refine_tensors", recording)
        out = inpainter.refine(refine_case["image"].numpy(), refine_case["mask"].numpy(), **refine_case["refiner"])
    assert len(seen) == 1
    return out, seen[0]


def test_golden_refine_reference_float64_matches_the_original(refine_case, golden_reference_run):
    _, result = golden_reference_run
    want = refine_case["output"]
    assert result.output.dtype == torch.float64 and result.output.shape == want.shape == (1, 3, 150, 200)
    assert result.scale_sizes == ((75, 100), (150, 200)) and not result.resized
    assert result.losses[0] is None and math.isfinite(result.losses[1])
    error = (result.output - want).abs().max().item()
    spread = f"output std {want.std().item():.4f}, range {want.min().item():.4f}..{want.max().item():.4f}"
    assert error <= GOLDEN_TOLERANCE, f"max abs error {error:.3g} (tolerance {GOLDEN_TOLERANCE:g}); {spread}"


def test_golden_refine_reference_uint8_matches_the_original(refine_case, golden_reference_run):
    out, _ = golden_reference_run
    want = refine_case["refined_uint8"].numpy()
    image, hole = refine_case["image"].numpy(), refine_case["mask"].numpy() > 0
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == want.shape
    assert np.array_equal(out[~hole], image[~hole])
    diff = np.abs(out.astype(int) - want.astype(int))
    equal = float((diff == 0).mean())
    assert diff.max() <= 1, f"max difference {diff.max()} levels; {equal:.4%} of the values equal"
    assert equal >= 0.999, f"only {equal:.4%} of the values equal"


# The golden case on the default backend (cpu, float32, the fused layers with their backward kernels):
# tests/test_refine_cpu.py::test_golden_refinement_on_the_cpu_backend.


# --- one scale: a plain prediction ---------------------------------------------------------------

def test_single_scale_refine_is_the_plain_prediction(tiny_inpainter):
    image, mask = _sample(24, 32, seed=4)  # a multiple of 8: no padding, whose mode differs
    calls = []
    out = tiny_inpainter.refine(image, mask, min_side=10_000, progress=lambda *a: calls.append(a))
    assert calls == [(0, 1, 0, 1, None)]
    assert np.array_equal(out, tiny_inpainter(image, mask, hd_strategy="original"))
    images, holes = _tensor_sample(24, 32, seed=4)
    result = refine_tensors(ReferenceRefineModel(tiny_inpainter.generator), images, holes,
                            RefineSettings(min_side=10_000))
    plain = tiny_inpainter._run(images, holes > 0)
    assert result.scale_sizes == ((24, 32),) and result.losses == (None,)
    assert (result.output - plain).abs().max().item() <= 1e-12


def test_progress_reports_every_forward(tiny_inpainter):
    image, mask = _sample(24, 32, seed=1)
    calls = []
    tiny_inpainter.refine(image, mask, n_iters=3, min_side=12, max_scales=2, progress=lambda *a: calls.append(a))
    assert [c[:4] for c in calls] == [(0, 2, 0, 1), (1, 2, 0, 3), (1, 2, 1, 3), (1, 2, 2, 3)]
    assert calls[0][4] is None and all(isinstance(c[4], float) and c[4] > 0 for c in calls[1:])


def test_a_hole_lost_to_erosion_leaves_a_finite_loss(tiny_inpainter):
    # At half resolution this hole is 2x2 pixels: the 15x15 erosion leaves nothing, where the original
    # averages an empty selection (a NaN loss with the same gradients).
    images, holes = _tensor_sample(24, 32)
    holes.zero_()
    holes[..., 8:12, 10:14] = 1
    result = refine_tensors(ReferenceRefineModel(tiny_inpainter.generator), images, holes,
                            RefineSettings(n_iters=3, min_side=12, max_scales=2))
    assert math.isfinite(result.losses[1]) and torch.isfinite(result.output).all()


def test_no_hole_gives_the_image_back(tiny_inpainter):
    image, _ = _sample()
    out = tiny_inpainter.refine(image, np.zeros(image.shape[:2], np.uint8))
    assert out is not image and np.array_equal(out, image)


def test_known_pixels_stay_and_float_images_stay_float(tiny_inpainter):
    image, mask = _sample(24, 32, seed=2)
    as_float = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    out = tiny_inpainter.refine(as_float, torch.from_numpy(mask), n_iters=2, min_side=12, max_scales=2)
    hole = torch.from_numpy(mask > 0)
    assert out.dtype == torch.float32 and out.shape == as_float.shape
    assert torch.equal(out[:, ~hole], as_float[:, ~hole]) and not torch.equal(out, as_float)
    as_uint8 = tiny_inpainter.refine(image, mask, n_iters=2, min_side=12, max_scales=2)
    # The uint8 path: the same float result, x 255 and truncated.
    want = (out.double().permute(1, 2, 0) * 255).clamp(0, 255).to(torch.uint8).numpy()
    assert np.abs(as_uint8.astype(int) - want.astype(int)).max() <= 1


# --- the px_budget resize ------------------------------------------------------------------------

RESIZE_KW = dict(px_budget=1500, n_iters=2, min_side=16, max_scales=2)  # 40x56 -> 32x45, two scales


def _resized_reference(image_u8: np.ndarray, mask_u8: np.ndarray, generator) -> torch.Tensor:
    """refine_tensors on the image and mask resized here, bilinearly, mask values > 1e-8 made 1."""
    image = torch.from_numpy(image_u8[..., :3]).permute(2, 0, 1)[None].double() / 255
    mask = torch.from_numpy(mask_u8 > 0)[None, None].double()
    image = F.interpolate(image, size=(32, 45), mode="bilinear", align_corners=False)
    mask = F.interpolate(mask, size=(32, 45), mode="bilinear", align_corners=False)
    mask = torch.where(mask > 1e-8, torch.ones_like(mask), mask)
    settings = RefineSettings(**{**RESIZE_KW, "px_budget": 10 ** 9})
    return refine_tensors(ReferenceRefineModel(generator), image, mask, settings).output


@pytest.fixture(scope="module")
def resize_sample():
    return _sample(40, 56, seed=3, hole=(slice(10, 30), slice(12, 40)))


def test_over_the_budget_refines_and_returns_at_the_smaller_size(tiny_inpainter, resize_sample):
    image, mask = resize_sample
    with pytest.warns(RuntimeWarning) as record:
        out = tiny_inpainter.refine(image, mask, **RESIZE_KW)
    assert len(record) == 1
    assert str(record[0].message) == (
        "refine: the image is 56x40 pixels, more than px_budget=1500; it was refined and is returned at 45x32 "
        "(full_size=True pastes the refined hole back at the input's size)")
    assert out.shape == (32, 45, 3) and out.dtype == np.uint8
    want = _truncate(_resized_reference(image, mask, tiny_inpainter.generator))
    assert np.array_equal(out, want)


def test_over_the_budget_resizes_alpha_too(tiny_inpainter, resize_sample):
    image, mask = resize_sample
    alpha = np.random.default_rng(7).integers(0, 256, image.shape[:2], dtype=np.uint8)
    rgba = np.dstack([image, alpha])
    with pytest.warns(RuntimeWarning):
        out = tiny_inpainter.refine(Image.fromarray(rgba, "RGBA"), Image.fromarray(mask), **RESIZE_KW)
    assert out.mode == "RGBA" and out.size == (45, 32)
    got = np.asarray(out)
    alpha_small = F.interpolate(torch.from_numpy(alpha)[None, None].double() / 255, size=(32, 45), mode="bilinear",
                                align_corners=False)
    assert np.array_equal(got[..., 3], (alpha_small[0, 0] * 255).clamp(0, 255).to(torch.uint8).numpy())
    assert np.array_equal(got[..., :3], _truncate(_resized_reference(image, mask, tiny_inpainter.generator)))


def test_resize_input_keeps_the_container():
    gen = torch.Generator().manual_seed(9)
    grey = torch.rand(20, 30, generator=gen, dtype=torch.float32)
    small = resize_input(grey, (10, 15), torch.float64, torch.device("cpu"))
    assert small.shape == (10, 15) and small.dtype == torch.float32
    want = F.interpolate(grey.double()[None, None], size=(10, 15), mode="bilinear", align_corners=False)[0, 0]
    assert torch.equal(small, want.float())
    array = (torch.rand(20, 30, 1, generator=gen) * 255).to(torch.uint8).numpy()
    small = resize_input(array, (7, 11), torch.float32, torch.device("cpu"))
    assert small.shape == (7, 11, 1) and small.dtype == np.uint8
    bilevel = resize_input(Image.fromarray(array[..., 0] > 127), (7, 11), torch.float32, torch.device("cpu"))
    assert bilevel.mode == "1" and bilevel.size == (11, 7)


def test_full_size_pastes_the_refined_hole_at_the_input_size(tiny_inpainter, resize_sample):
    image, mask = resize_sample
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = tiny_inpainter.refine(image, mask, full_size=True, **RESIZE_KW)
    assert out.shape == image.shape and out.dtype == np.uint8
    hole = mask > 0
    assert np.array_equal(out[~hole], image[~hole])
    refined = _resized_reference(image, mask, tiny_inpainter.generator)
    up = F.interpolate(refined, size=(40, 56), mode="bilinear", align_corners=False).clamp(0, 1)
    assert np.array_equal(out[hole], _truncate(up)[hole])


# --- sizes the model or the settings cannot take -------------------------------------------------

def test_too_small_images_fail_as_in_call(refine_case):
    inpainter = Inpainter(saved_generator(refine_case, torch.float32), backend="reference")
    image, mask = _sample(8, 8, hole=(slice(2, 5), slice(2, 5)))
    with pytest.raises(ValueError, match=r"^image is 8x8 pixels; this model needs at least 9 pixels on each side$"):
        inpainter.refine(image, mask)
    image, mask = _sample(20, 20, hole=(slice(5, 15), slice(5, 15)))
    message = ("refine's smallest scale would be 5x5 pixels; this model needs at least 9 pixels on each side: "
               "raise min_side or px_budget")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        inpainter.refine(image, mask, min_side=5)
    with pytest.raises(ValueError, match=r"^modulo must be a multiple of 8 for this model \(it halves its input 3 "
                                         r"times\), got 12$"):
        inpainter.refine(image, mask, modulo=12)


def test_modulo_larger_than_reflect_padding_allows(tiny_inpainter):
    image, mask = _sample(9, 10, hole=(slice(2, 6), slice(2, 6)))
    message = ("refine cannot pad a scale of 10x9 pixels (of the 10x9 image) to a multiple of modulo=32: reflect "
               "padding must be smaller than the side; lower modulo, or raise min_side or px_budget")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        tiny_inpainter.refine(image, mask, modulo=32)
