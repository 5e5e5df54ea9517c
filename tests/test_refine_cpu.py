"""Refinement on the cpu backend: the fast rear's gradients against plain autograd on the reference model,
the striped full-resolution layers, the golden refinement case in float32, and what the backend refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lama_fast.backends.cpu import not_supported_reasons
from lama_fast.fast import build_fast_generator
from lama_fast.fast import layers as fast_layers
from lama_fast.rewrite import UnsupportedModelError
from model_cases import saved_generator

refine = pytest.importorskip("lama_fast.refine")

CPU_REASONS = not_supported_reasons(torch.device("cpu"), torch.float32)
pytestmark = pytest.mark.skipif(bool(CPU_REASONS), reason="; ".join(CPU_REASONS))


def winograd_here() -> bool:
    from lama_fast.ops.winograd import winograd_reasons

    return not winograd_reasons()




def features(generator, height, width, dtype, seed=0):
    """Random (z1, z2) shaped like the front's output for a padded input of height x width."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 4, height, width, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        model = refine.refine_model(generator.double(), "reference")
        z1, z2 = model.front(x)
    return z1.to(dtype), z2.to(dtype)


def rear_gradients(model, z1, z2, weight):
    a = z1.detach().clone().requires_grad_(True)
    b = z2.detach().clone().requires_grad_(True)
    pred = model.rear(a, b)
    (pred.double() * weight).sum().backward()
    return pred.detach().double(), a.grad.double(), b.grad.double()


def scaled(got, want):
    return float((got - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("stripes", [False, True], ids=["whole", "stripes"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_rear_gradients_match_autograd_on_the_reference(refine_case, dtype, stripes, monkeypatch):
    if dtype == torch.float32 and not winograd_here():
        pytest.skip("float32 refine needs the Winograd kernels (AVX2 or AVX-512)")
    if stripes:
        # Stripes of 8 rows: the full-resolution layers run and back-propagate in several pieces.
        monkeypatch.setattr(fast_layers, "STRIPE_BYTES", 4096)
        monkeypatch.setattr(fast_layers, "STRIPE_ABOVE_BYTES", 4096)
    reference = saved_generator(refine_case, torch.float64)
    z1, z2 = features(reference, 40, 56, torch.float64)
    weight = torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    want_pred, want_1, want_2 = rear_gradients(refine.refine_model(reference, "reference"), z1, z2, weight)

    fast = build_fast_generator(saved_generator(refine_case, torch.float32), dtype)
    model = refine.refine_model(fast, "cpu")
    got_pred, got_1, got_2 = rear_gradients(model, z1.to(dtype), z2.to(dtype), weight)
    model.close()
    errors = [scaled(got_pred, want_pred), scaled(got_1, want_1), scaled(got_2, want_2)]
    # float64 runs the same float32-stored weights exactly; float32 is tied to its epsilon over ~20 layers.
    limit = 1e-10 if dtype == torch.float64 else 2e-4
    spread = float(want_1.std())
    assert max(errors) < limit, f"prediction, grad z1, grad z2 scaled errors {errors}; grad z1 std {spread:.3g}"


def test_front_gives_new_tensors(refine_case):
    fast = build_fast_generator(saved_generator(refine_case, torch.float32), torch.float64)
    model = refine.refine_model(fast, "cpu")
    x = torch.rand(1, 4, 32, 48, dtype=torch.float64)
    z1, z2 = model.front(x)
    again = model.front(x)
    assert z1.data_ptr() != again[0].data_ptr() and torch.equal(z1, again[0]) and torch.equal(z2, again[1])
    assert z1.shape == (1, 32, 4, 6) and z2.shape == (1, 96, 4, 6)
    assert not z1.requires_grad and z1.is_contiguous(memory_format=torch.channels_last)


def test_golden_refinement_on_the_cpu_backend(refine_case):
    """The default backend (cpu, float32) against the original's uint8 result."""
    if not winograd_here():
        pytest.skip("float32 refine needs the Winograd kernels (AVX2 or AVX-512)")
    from lama_fast.inpaint import Inpainter

    fast = build_fast_generator(saved_generator(refine_case, torch.float32), torch.float32)
    settings = dict(refine_case["refiner"])
    inpainter = Inpainter(fast, backend="cpu")
    got = inpainter.refine(refine_case["image"].numpy(), refine_case["mask"].numpy(),
                           **{k: settings[k] for k in ("n_iters", "lr", "min_side", "max_scales", "px_budget",
                                                       "modulo")})
    want = refine_case["refined_uint8"].numpy()
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    within = float((diff <= 1).mean())
    hole = refine_case["mask"].numpy() > 0
    assert within >= 0.995, (f"uint8 within 1 level on {within:.4%} of pixels (max {diff.max()}, "
                             f"{float((diff[hole] == 0).mean()):.2%} of hole pixels equal)")


def test_cpu_float64_refinement_equals_the_reference(refine_case):
    """The whole refinement (pyramid, 15 Adam steps per scale) on the cpu backend in float64."""
    image = refine_case["image"].permute(2, 0, 1)[None].double() / 255
    mask = (refine_case["mask"] > 0)[None, None].double()
    settings = refine.RefineSettings(**refine_case["refiner"])
    fast = build_fast_generator(saved_generator(refine_case, torch.float32), torch.float64)
    got = refine.refine_tensors(refine.refine_model(fast, "cpu"), image, mask, settings).output
    want = refine_case["output"]
    error = float((got - want).abs().max())
    assert error < 1e-6, f"max abs error {error:.3g}; output spread (std) {float(want.std()):.3g}"


def test_refine_refuses_onednn_convolutions(refine_case):
    generator = saved_generator(refine_case, torch.float32)
    direct = build_fast_generator(generator, torch.float32, conv_algorithm="direct")
    with pytest.raises(UnsupportedModelError, match="refine on the cpu backend needs the Winograd 3x3 "
                                                    r"convolutions \(float32 with AVX2 or AVX-512\) or float64"):
        refine.refine_model(direct, "cpu")


@pytest.mark.skipif(bool(not_supported_reasons(torch.device("cpu"), torch.bfloat16)),
                    reason="; ".join(not_supported_reasons(torch.device("cpu"), torch.bfloat16)))
def test_refine_refuses_bfloat16(refine_case):
    bf16 = build_fast_generator(saved_generator(refine_case, torch.float32), torch.bfloat16)
    with pytest.raises(ValueError, match="refine on the cpu backend runs in float32 or float64, this model "
                                         "computes in torch.bfloat16"):
        refine.refine_model(bf16, "cpu")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", ["resize", "single-scale"])
def test_cpu_refinement_against_the_reference_in_float64(refine_case, case, dtype):
    """A px_budget that forces the resize (two scales of the resized image) and a single scale (a plain
    prediction at that size), on the cpu backend against the reference backend in float64."""
    if dtype == torch.float32 and not winograd_here():
        pytest.skip("float32 refine needs the Winograd kernels (AVX2 or AVX-512)")
    image = refine_case["image"].permute(2, 0, 1)[None].double() / 255
    mask = (refine_case["mask"] > 0)[None, None].double()
    if case == "resize":  # 150x200 = 30,000 pixels -> 122x163, two scales
        settings = refine.RefineSettings(n_iters=4, min_side=64, px_budget=20_000)
    else:
        settings = refine.RefineSettings(n_iters=4, min_side=1000)
    reference = saved_generator(refine_case, torch.float64)
    want = refine.refine_tensors(refine.refine_model(reference, "reference"), image, mask, settings)
    fast = build_fast_generator(saved_generator(refine_case, torch.float32), dtype)
    got = refine.refine_tensors(refine.refine_model(fast, "cpu"), image, mask, settings)
    assert got.scale_sizes == want.scale_sizes and got.resized == want.resized == (case == "resize")
    error = float((got.output.double() - want.output).abs().max())
    # float32 through 4 Adam steps per scale: about a tenth of an 8-bit level.
    limit = 1e-9 if dtype == torch.float64 else 5e-4
    assert error < limit, (f"max abs error {error:.3g} (scales {want.scale_sizes}); "
                           f"output spread (std) {float(want.output.std()):.3g}")
