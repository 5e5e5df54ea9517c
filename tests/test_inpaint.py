"""The inpainting entry point: the original pipeline, the golden image, the public interface and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import lama_fast
from configs import TINY_CONFIG, tiny_config
from lama_fast import Inpainter, available_backends, optimize
from lama_fast.backends import _cpu_has_bf16
from lama_fast.inpaint import pad_to_modulo
from lama_fast.model import build_generator
from lama_fast.model.random import random_generator

@pytest.fixture(scope="module")
def tiny_inpainter():
    return Inpainter(optimize(random_generator(TINY_CONFIG, seed=0), backend="reference"))


def _sample(h=21, w=30, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: h // 2, w // 3: 2 * w // 3] = 255
    return image, mask


# --- the pipeline's pieces ----------------------------------------------------------------------

@pytest.mark.parametrize("h,w", [(61, 83), (8, 16), (3, 5), (1, 1), (17, 9)])
def test_padding_is_numpys_symmetric_mode(h, w):
    x = np.arange(2 * h * w, dtype=np.float64).reshape(2, h, w)
    want = np.pad(x, ((0, 0), (0, -h % 8), (0, -w % 8)), mode="symmetric")
    np.testing.assert_array_equal(pad_to_modulo(torch.from_numpy(x)).numpy(), want)


def test_unmasked_pixels_are_preserved_exactly(tiny_inpainter):
    image, mask = _sample()
    result = tiny_inpainter(image, mask)
    keep = mask == 0
    np.testing.assert_array_equal(result[keep], image[keep])
    assert (result[~keep] != image[~keep]).any()


def test_any_nonzero_mask_value_is_a_hole(tiny_inpainter):
    image, mask = _sample()
    np.testing.assert_array_equal(tiny_inpainter(image, mask), tiny_inpainter(image, (mask > 0).astype(np.uint8)))
    np.testing.assert_array_equal(tiny_inpainter(image, mask), tiny_inpainter(image, mask > 0))


def test_matches_a_direct_statement_of_the_pipeline(tiny_inpainter):
    image, mask = _sample(13, 22, seed=3)
    img = np.pad(image.astype(np.float32).transpose(2, 0, 1) / 255, ((0, 0), (0, 3), (0, 2)), mode="symmetric")
    hole = (np.pad(mask[None].astype(np.float32) / 255, ((0, 0), (0, 3), (0, 2)), mode="symmetric") > 0)
    hole = hole.astype(np.float32)
    batch = torch.from_numpy(np.concatenate([img * (1 - hole), hole])[None])
    with torch.no_grad():
        out = tiny_inpainter.generator(batch)[0].numpy()
    blended = (hole * out + (1 - hole) * img)[:, :13, :22].transpose(1, 2, 0)
    want = np.clip(blended * 255, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(tiny_inpainter(image, mask), want)


class _Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        raise AssertionError("the generator must not run")


def test_empty_mask_returns_the_input_without_running_the_network():
    image, _ = _sample()
    result = Inpainter(_Exploding())(image, np.zeros(image.shape[:2], np.uint8))
    np.testing.assert_array_equal(result, image)
    assert result is not image


def test_batch_equals_single_images(tiny_inpainter):
    pairs = [_sample(seed=s) for s in range(3)]
    images = torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i, _ in pairs])
    masks = torch.stack([torch.from_numpy(m)[None] for _, m in pairs])
    batch = tiny_inpainter.inpaint_batch(images, masks)
    assert batch.shape == images.shape and batch.dtype == torch.float32
    for k in range(3):
        single = tiny_inpainter.inpaint_batch(images[k:k + 1], masks[k:k + 1])
        assert (batch[k] - single[0]).abs().max() <= 1e-6
        keep = masks[k, 0] == 0
        assert torch.equal(batch[k][:, keep], images[k][:, keep])


def test_nan_output_is_an_error_not_garbage():
    class NaNGen(_Exploding):
        def forward(self, x):
            return torch.full_like(x[:, :3], float("nan"))

    image, mask = _sample()
    with pytest.raises(RuntimeError, match="the generator produced NaN or infinite values"):
        Inpainter(NaNGen())(image, mask)


@pytest.mark.parametrize(
    "image,mask,exc,message",
    [
        # Every input form and its errors: tests/test_images.py; here they reach the caller through Inpainter.
        ("img", np.zeros((4, 4), np.uint8), TypeError, "image must be a numpy array, a PIL image or a torch tensor, got str"),
        (np.zeros((4, 4, 3), np.int16), np.zeros((4, 4), np.uint8), TypeError,
         "image must be uint8, or floating point with values in [0, 1]; got dtype int16"),
        (np.zeros((0, 4, 3), np.uint8), np.zeros((0, 4), np.uint8), ValueError, "image is empty: shape (0, 4, 3)"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5), np.uint8), ValueError, "mask is 5x4 but the image is 4x4"),
        (np.full((4, 4, 3), 2.0, np.float32), np.zeros((4, 4), np.uint8), ValueError,
         "image values must lie in [0, 1], found values in [2, 2] (values in [0, 255]? divide the image by 255)"),
        (torch.full((3, 4, 4), float("nan")), np.zeros((4, 4), np.uint8), ValueError, "image contains NaN values"),
        (np.zeros((4, 4, 3), np.uint8), np.full((4, 4), np.nan), ValueError, "mask contains NaN values"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.complex64), TypeError,
         "mask must be bool, integer or floating point; got dtype complex64"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.uint8), ValueError,
         "hd_strategy must be one of original, crop, resize; got 'tiles'"),
    ],
)
def test_bad_input_is_named(tiny_inpainter, image, mask, exc, message):
    with pytest.raises(exc) as info:
        tiny_inpainter(image, mask, hd_strategy="tiles" if "hd_strategy" in message else None)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "images,masks,exc,message",
    [
        (torch.rand(1, 4, 8, 8), torch.zeros(1, 1, 8, 8), ValueError, "images must have shape Nx3xHxW, got (1, 4, 8, 8)"),
        (torch.rand(1, 3, 8, 8), torch.zeros(1, 8, 8), ValueError, "masks must have shape Nx1xHxW, got (1, 8, 8)"),
        (torch.rand(2, 3, 8, 8), torch.zeros(1, 1, 8, 8), ValueError,
         "images (2, 3, 8, 8) and masks (1, 1, 8, 8) differ in batch or spatial size"),
        (torch.full((1, 3, 8, 8), float("nan")), torch.zeros(1, 1, 8, 8), ValueError, "images contain NaN or infinite values"),
        (torch.full((1, 3, 8, 8), 2.0), torch.zeros(1, 1, 8, 8), ValueError, "images must lie in [0, 1]"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 1, 8, 8), TypeError,
         "images must be a floating-point tensor in [0, 1], got torch.uint8"),
        (np.zeros((1, 3, 8, 8)), torch.zeros(1, 1, 8, 8), TypeError, "inpaint_batch takes torch tensors for images and masks"),
    ],
)
def test_bad_batches_are_named(tiny_inpainter, images, masks, exc, message):
    with pytest.raises(exc) as info:
        tiny_inpainter.inpaint_batch(images, masks)
    assert str(info.value) == message


# --- backends and optimize() -----------------------------------------------------------------

def test_available_backends_gives_a_reason_for_each_unusable_one():
    assert available_backends()["reference"] is None
    assert list(available_backends()) == ["triton", "cuda", "cpu", "reference"]
    reason = available_backends("cpu", torch.bfloat16)["reference"]
    assert reason.startswith("the reference model runs in float32 or float64 only")


def test_optimize_is_pure_and_keeps_outputs():
    generator = random_generator(TINY_CONFIG, seed=1)
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    fast = optimize(generator, backend="reference")
    assert fast is not generator and fast.lama_fast_backend == "reference"
    assert fast.lama_fast_backend_reasons["reference"] is None
    x = torch.rand(1, 4, 16, 24)
    with torch.no_grad():
        assert torch.equal(fast(x), generator(x))
    assert all(torch.equal(v, generator.state_dict()[k]) for k, v in before.items())
    assert not any(p.requires_grad for p in fast.parameters())


def test_optimize_follows_the_generators_dtype_and_accepts_another():
    generator = random_generator(TINY_CONFIG, seed=1).double()
    assert next(optimize(generator, backend="reference").parameters()).dtype == torch.float64
    assert next(optimize(generator, backend="reference", dtype=torch.float32).parameters()).dtype == torch.float32
    assert optimize(generator).compute_dtype == torch.float64


@pytest.mark.skipif(not _cpu_has_bf16(), reason="this CPU has no bfloat16 instructions: auto takes no backend in bfloat16")
def test_optimize_accepts_bfloat16_where_the_cpu_has_it():
    generator = random_generator(TINY_CONFIG, seed=1).double()
    assert optimize(generator, dtype=torch.bfloat16).compute_dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"backend": "turbo"}, "unknown backend 'turbo'; known backends: auto, triton, cuda, cpu, reference"),
        ({"backend": "reference", "dtype": torch.bfloat16},
         "backend 'reference' cannot run on cpu in torch.bfloat16: the reference model runs in float32 or float64 only"),
        # The triton backend's reason depends on the machine (no triton, no GPU, or the interpreter).
        ({"backend": "auto", "dtype": torch.float16},
         "no backend can run on cpu in torch.float16: triton: * cpu: the cpu backend runs in float32, bfloat16 or "
         "float64; got torch.float16; reference: the reference model runs in float32 or float64 only"),
    ],
)
def test_backend_errors_list_the_reasons(kwargs, message):
    with pytest.raises(ValueError) as info:
        optimize(random_generator(TINY_CONFIG), **kwargs)
    head, _, tail = message.partition(" * ")
    assert str(info.value).startswith(head)
    assert tail in str(info.value)


def test_optimize_rejects_non_modules():
    with pytest.raises(TypeError, match="optimize\\(\\) takes a torch.nn.Module, got dict"):
        optimize({})


def test_the_cuda_backend_says_why_it_cannot_run_on_the_cpu():
    reason = available_backends("cpu", torch.float32)["cuda"]
    assert reason.startswith("the cuda backend runs on CUDA devices, not on cpu")
    assert "float32, bfloat16 or float16; got torch.float64" in available_backends("cpu", torch.float64)["cuda"]
    with pytest.raises(ValueError, match="backend 'cuda' cannot run on cpu in torch.float32: the cuda backend runs "
                                         "on CUDA devices, not on cpu"):
        optimize(random_generator(TINY_CONFIG), backend="cuda")


@pytest.mark.parametrize("call", ["optimize", "load"])
def test_cuda_graphs_need_a_cuda_device(call, tmp_path):
    with pytest.raises(ValueError, match=r"^cuda_graphs=True needs a CUDA device, got cpu$"):
        if call == "optimize":
            optimize(random_generator(TINY_CONFIG), backend="reference", cuda_graphs=True)
        else:  # refused before the (missing) file is read
            lama_fast.load(tmp_path / "missing.ckpt", backend="reference", cuda_graphs=True)
    with pytest.raises(TypeError, match=r"^cuda_graphs must be None, True or False, got 'yes'$"):
        optimize(random_generator(TINY_CONFIG), backend="reference", cuda_graphs="yes")


def test_cuda_graphs_false_leaves_a_cpu_module_as_it_is():
    generator = random_generator(TINY_CONFIG, seed=1)
    fast = optimize(generator, backend="reference", cuda_graphs=False)
    assert type(fast) is type(generator)
    x = torch.rand(1, 4, 16, 24)
    with torch.no_grad():
        assert torch.equal(fast(x), generator(x))


def test_the_cuda_graph_wrapper_runs_cpu_inputs_eagerly():
    from lama_fast.gpu.graphs import CudaGraphed

    generator = random_generator(TINY_CONFIG, seed=1).eval()
    wrapped = CudaGraphed(generator)
    x = torch.rand(1, 4, 16, 24)
    with torch.no_grad():
        assert torch.equal(wrapped(x), generator(x))
    assert len(wrapped.graphs) == 0 and wrapped.graph_error is None
    # The wrapped generator's parameters stay visible (Inpainter reads the device and dtype from them).
    assert next(wrapped.parameters()) is next(generator.parameters())


def test_load_checks_the_backend_before_reading_the_file(tmp_path):
    with pytest.raises(ValueError, match="backend 'reference' cannot run on cpu in torch.float16"):
        lama_fast.load(tmp_path / "missing.ckpt", backend="reference", dtype=torch.float16)


def test_build_generator_public_name():
    assert isinstance(lama_fast.model.build_generator("lama-fourier"), nn.Module)
    assert len(build_generator("lama-fourier").model) == 5 + 9 + 1 + 9 + 3


def test_auto_on_cuda_takes_triton_only_where_the_reference_cannot_run(monkeypatch):
    """On an H100 the reference beats the triton backend in float32 at 1000x750 and above
    (bench/results/gpu_notes.md); auto takes triton for half precision only."""
    from lama_fast import backends
    from lama_fast.kernels import triton_reasons

    if triton_reasons():
        pytest.skip("; ".join(triton_reasons()))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert backends.select_backend("auto", "cuda", torch.float32)[0].name == "reference"
    assert backends.select_backend("auto", "cuda", torch.bfloat16)[0].name == "triton"
    assert backends.select_backend("auto", "cuda", torch.float16)[0].name == "triton"
    assert backends.select_backend("triton", "cuda", torch.float32)[0].name == "triton"


# --- the smallest image a generator takes ---------------------------------------------------------

def _deep_inpainter(n_downsampling, backend="reference"):
    generator = random_generator(tiny_config(n_downsampling=n_downsampling), seed=0)
    return Inpainter(optimize(generator, backend=backend), backend)


def test_min_side_follows_the_downsampling_depth():
    assert Inpainter(optimize(random_generator(TINY_CONFIG, seed=0), backend="reference")).min_side == 1
    assert _deep_inpainter(3).min_side == 9  # big-lama's depth: a 16 px padded input halves to 2 px
    assert _deep_inpainter(4).min_side == 25
    assert Inpainter(_Exploding()).min_side == 9  # a module that does not show its depth: big-lama's
    # The original code's generator has no config: its stride-2 upsampling layers give the depth,
    # in the module and in a fast module made from it.
    generator = random_generator(TINY_CONFIG, seed=0)
    generator.config = None
    assert Inpainter(generator).min_side == 1
    deep = random_generator(tiny_config(n_downsampling=4), seed=0)
    deep.config = None
    assert Inpainter(deep).min_side == 25
    if available_backends()["cpu"] is None:
        assert Inpainter(optimize(deep, backend="cpu"), "cpu").min_side == 25


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_an_image_below_min_side_is_a_value_error_and_min_side_runs(backend):
    if available_backends()[backend] is not None:
        pytest.skip(available_backends()[backend])
    inpainter = _deep_inpainter(3, backend)
    message = "image is {0}x{1} pixels; this model needs at least 9 pixels on each side"
    for strategy in ("original", "crop", "resize"):
        for height, width in ((8, 8), (8, 30), (30, 1)):
            image, mask = _sample(height, width)
            mask[...] = 255
            with pytest.raises(ValueError, match=f"^{message.format(width, height)}$"):
                inpainter(image, mask, hd_strategy=strategy)
    # Whatever the mask: an empty one does not make the image acceptable.
    image, _ = _sample(8, 8)
    with pytest.raises(ValueError, match=f"^{message.format(8, 8)}$"):
        inpainter(image, np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="^images are 8x8 pixels; this model needs at least 9 pixels on each side$"):
        inpainter.inpaint_batch(torch.rand(2, 3, 8, 8), torch.ones(2, 1, 8, 8))
    image, mask = _sample(9, 9)
    mask[...] = 255
    result = inpainter(image, mask, hd_strategy="original")
    assert result.shape == (9, 9, 3) and not np.array_equal(result, image)
    assert inpainter.inpaint_batch(torch.rand(2, 3, 9, 9), torch.ones(2, 1, 9, 9)).shape == (2, 3, 9, 9)
