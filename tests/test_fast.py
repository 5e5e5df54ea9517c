"""optimize(backend="cpu"): the rewritten generator against the reference and the golden vectors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import lama_fast
from configs import tiny_config
from lama_fast.backends import _cpu_has_bf16, available_backends
from lama_fast.fast import FastGenerator, convert_ffc_layer
import lama_fast.fast
from lama_fast.model import build_generator
from lama_fast.model.random import random_generator
from lama_fast.ops.winograd import winograd_reasons
from lama_fast.rewrite import UnsupportedModelError
from model_cases import golden_batch, golden_generator, golden_module, randomise, scaled_error

CPU_REASON = available_backends("cpu", torch.float32)["cpu"]
pytestmark = pytest.mark.skipif(CPU_REASON is not None, reason=f"cpu backend unavailable: {CPU_REASON}")
BF16_REASON = available_backends("cpu", torch.bfloat16)["cpu"]
WINOGRAD_REASON = ("; ".join(winograd_reasons()) or None) if CPU_REASON is None else CPU_REASON

# |got - want| <= tol * max(1, |want|) against float64 truth.
TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}


def _input(shape, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(shape[0], 3, *shape[2:], generator=gen, dtype=torch.float64)
    mask = (torch.rand(shape[0], 1, *shape[2:], generator=gen) > 0.6).double()
    return torch.cat((image * (1 - mask), mask), dim=1).to(dtype)


def _reference_output(generator, x):
    with torch.no_grad():
        return copy.deepcopy(generator).double()(x.double())


# --- the rewrite is exact in float64 -------------------------------------------------------------

VARIANTS = {
    "tiny": tiny_config(),
    "forward-norm": tiny_config(resnet_conv_kwargs={"ratio_gin": 0.75, "ratio_gout": 0.75,
                                                     "enable_lfu": False, "fft_norm": "forward"}),
    "half-global": tiny_config(n_blocks=2, resnet_conv_kwargs={"ratio_gin": 0.5, "ratio_gout": 0.5,
                                                                "enable_lfu": False}),
    "tanh-out": tiny_config(add_out_act="tanh"),
    "no-out-act": tiny_config(add_out_act=False),
    "all-local": tiny_config(resnet_conv_kwargs={"ratio_gin": 0, "ratio_gout": 0, "enable_lfu": False}),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_float64_rewrite_equals_reference(name):
    generator = randomise(build_generator(VARIANTS[name]), seed=3)
    x = _input((2, 4, 24, 40), seed=1)
    fast = lama_fast.optimize(generator, backend="cpu", dtype=torch.float64)
    assert isinstance(fast, FastGenerator) and fast.lama_fast_backend == "cpu"
    out = fast(x)
    want = _reference_output(generator, x)
    assert out.dtype == torch.float64 and out.shape == want.shape and out.is_contiguous()
    assert want.std() > 1e-3
    assert scaled_error(out, want) <= TOLERANCE[torch.float64]


def test_odd_sizes_and_batch():
    generator = random_generator(tiny_config(), seed=2)
    for shape in [(1, 4, 8, 8), (3, 4, 20, 36), (1, 4, 52, 12)]:
        x = _input(shape, seed=4)
        want = _reference_output(generator, x)
        got = lama_fast.optimize(generator, backend="cpu", dtype=torch.float32)(x.float())
        assert got.shape == want.shape
        assert scaled_error(got, want) <= TOLERANCE[torch.float32]


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_any_input_layout(layout):
    generator = random_generator(tiny_config(), seed=2)
    x = _input((1, 4, 32, 32), seed=5)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        x = torch.cat((x, x), dim=3)[..., ::2]
    want = _reference_output(generator, x)
    got = lama_fast.optimize(generator, backend="cpu", dtype=torch.float64)(x)
    assert scaled_error(got, want) <= TOLERANCE[torch.float64]


# --- golden vectors from the original code ----------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_generator_matches_golden(golden_dir, golden_case, dtype):
    case = golden_case("inpaint_case")
    fast = lama_fast.optimize(golden_generator(golden_dir, torch.float32), backend="cpu", dtype=dtype)
    out = fast(golden_batch(case, dtype))
    want = case["generator_output"]
    assert out.dtype == dtype
    assert scaled_error(out, want) <= TOLERANCE[dtype] if dtype == torch.float64 else (
        (out.double() - want).abs().max().item() <= 2e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ffc_layer_matches_golden(golden_case, dtype):
    case, module = golden_module(golden_case, "ffc_case")
    layer = convert_ffc_layer(module, dtype, "ffc_case", conv_algorithm="direct")
    out_l, out_g = layer((case["input_local"].to(dtype), case["input_global"].to(dtype)))
    assert scaled_error(out_l, case["output_local"]) <= TOLERANCE[dtype]
    assert scaled_error(out_g, case["output_global"]) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_spectral_op_matches_golden(golden_case, dtype):
    """The C++ spectral_transform op, with the weights folded as optimize() folds them."""
    from lama_fast.fast.ffc import FusedSpectral
    from lama_fast.rewrite import fold_spectral

    case, module = golden_module(golden_case, "spectral_case")
    fused = FusedSpectral(fold_spectral(module, None, "spectral_case"), dtype)
    out = fused(case["input"].to(dtype), None, None, False)
    assert out.dtype == dtype and out.is_contiguous(memory_format=torch.channels_last)
    assert scaled_error(out, case["output"]) <= TOLERANCE[dtype]


@pytest.mark.skipif(WINOGRAD_REASON is not None, reason=f"Winograd unavailable: {WINOGRAD_REASON}")
def test_ffc_layer_with_winograd_matches_golden(golden_case):
    """Winograd's rounding error scales with the layer's inputs, not with each output element, so
    its bound is norm-wise: max |error| <= 1e-5 * max |expected| (measured 1.8e-6 and 2.8e-7)."""
    case, module = golden_module(golden_case, "ffc_case")
    layer = convert_ffc_layer(module, torch.float32, "ffc_case", conv_algorithm="auto")
    assert all(conv.algorithm == "winograd" for conv in (layer.l2l, layer.g2l, layer.l2g))
    out_l, out_g = layer((case["input_local"].float(), case["input_global"].float()))
    for got, want in ((out_l, case["output_local"]), (out_g, case["output_global"])):
        assert (got.double() - want).abs().max().item() <= 1e-5 * want.abs().max().item()


def test_conv_algorithms_are_recorded():
    generator = random_generator("big-lama", seed=0)
    direct = lama_fast.fast.build_fast_generator(generator, torch.float32, conv_algorithm="direct")
    # 108 in the blocks, 1 + 4 in the encoder (the last downsampling has a local and a global one),
    # 3 x 4 upsampling phases, 1 output convolution.
    assert direct.conv_algorithms() == {"onednn": 126}
    if _cpu_has_bf16():  # oneDNN packs bfloat16 weights only on CPUs with bfloat16 instructions
        bf16 = lama_fast.fast.build_fast_generator(generator, torch.bfloat16)
        assert bf16.conv_algorithms() == {"onednn": 126}
    if WINOGRAD_REASON is None:
        # 18 blocks x 2 layers x 3 branch convolutions; the encoder and decoder stay on oneDNN.
        auto = lama_fast.fast.build_fast_generator(generator, torch.float32)
        assert auto.conv_algorithms() == {"onednn": 18, "winograd": 108}


@pytest.mark.skipif(BF16_REASON is not None, reason=f"bfloat16 unavailable: {BF16_REASON}")
def test_bfloat16_error_is_bounded_and_not_float32():
    generator = random_generator(tiny_config(), seed=2)
    x = _input((1, 4, 32, 48), seed=6)
    want = _reference_output(generator, x)
    got32 = lama_fast.optimize(generator, backend="cpu", dtype=torch.float32)(x.float())
    got16 = lama_fast.optimize(generator, backend="cpu", dtype=torch.bfloat16)(x.float())
    assert got16.dtype == torch.float32
    err16 = (got16.double() - want).abs().max().item()
    err32 = (got32.double() - want).abs().max().item()
    # bfloat16 keeps 8 bits of mantissa: visibly less exact than float32, still far below a colour level.
    assert err32 < err16 < 1 / 255


# --- what optimize() accepts and refuses ---------------------------------------------------------

def test_optimize_leaves_the_input_untouched():
    generator = random_generator(tiny_config(), seed=2)
    before = {k: v.clone() for k, v in generator.state_dict().items()}
    generator.train()
    lama_fast.optimize(generator, backend="cpu")
    assert generator.training
    after = generator.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_auto_picks_cpu_and_records_reasons():
    fast = lama_fast.optimize(random_generator(tiny_config(), seed=2))
    assert fast.lama_fast_backend == "cpu"
    assert fast.lama_fast_backend_reasons["cpu"] is None


def test_lfu_is_refused_by_name_and_auto_falls_back():
    generator = build_generator(tiny_config(resnet_conv_kwargs={"ratio_gin": 0.75, "ratio_gout": 0.75,
                                                                 "enable_lfu": True}))
    with pytest.raises(UnsupportedModelError) as info:
        lama_fast.optimize(generator, backend="cpu")
    assert str(info.value) == (
        "backend 'cpu' cannot run this generator: model.4.conv1.convg2g: "
        "the local Fourier unit (enable_lfu=True) is not fused"
    )
    fallback = lama_fast.optimize(generator)
    assert fallback.lama_fast_backend == "reference"
    assert fallback.lama_fast_backend_reasons["cpu"].startswith("this generator is not supported: model.4.conv1")


def test_gated_is_refused():
    generator = build_generator(tiny_config(resnet_conv_kwargs={"ratio_gin": 0.75, "ratio_gout": 0.75,
                                                                 "enable_lfu": False, "gated": True}))
    with pytest.raises(UnsupportedModelError, match=r"model\.4\.conv1: gated FFC layers are not supported"):
        lama_fast.optimize(generator, backend="cpu")


def test_half_precision_is_refused_with_reason():
    with pytest.raises(ValueError) as info:
        lama_fast.optimize(random_generator(tiny_config(), seed=2), backend="cpu", dtype=torch.float16)
    assert str(info.value) == (
        "backend 'cpu' cannot run on cpu in torch.float16: the cpu backend runs in float32, bfloat16 or "
        "float64; got torch.float16"
    )


def test_bad_input_messages():
    fast = lama_fast.optimize(random_generator(tiny_config(), seed=2), backend="cpu")
    with pytest.raises(ValueError, match=r"^expected 4 input channels, got 3$"):
        fast(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"^expected an \(N, C, H, W\) tensor, got torch.Size\(\[4, 16, 16\]\)$"):
        fast(torch.zeros(4, 16, 16))


# --- a generator laid out as the original saicinpainting code builds it --------------------------

def _as_original_layout(generator: nn.Module) -> nn.Module:
    """Our generator with the original's conventions: nn.Identity for every missing branch,
    norm and activation, and the Fourier unit's extra (off) options as attributes."""
    generator = copy.deepcopy(generator)
    for module in generator.modules():
        for name in ("convl2l", "convl2g", "convg2l", "convg2g", "gate", "bn_l", "bn_g", "act_l", "act_g", "lfu"):
            if name in module._modules and module._modules[name] is None:
                module._modules[name] = nn.Identity()
        if type(module).__name__ == "FourierUnit":
            module.use_se = False
            module.spatial_scale_factor = None
            module.spectral_pos_encoding = False
            module.ffc3d = False
            module.groups = 1
        if type(module).__name__ == "FFCResnetBlock":
            module.inline = False
    return generator


def test_original_layout_is_accepted():
    generator = random_generator(tiny_config(), seed=2)
    original = _as_original_layout(generator)
    assert any(isinstance(m, nn.Identity) for m in original.modules())
    x = _input((1, 4, 24, 32), seed=7)
    want = _reference_output(generator, x)
    got = lama_fast.optimize(original, backend="cpu", dtype=torch.float64)(x)
    assert scaled_error(got, want) <= TOLERANCE[torch.float64]


def test_inline_block_is_refused():
    original = _as_original_layout(random_generator(tiny_config(), seed=2))
    original.model[4].inline = True
    with pytest.raises(UnsupportedModelError, match=r"model\.4: inline residual blocks are not supported"):
        lama_fast.optimize(original, backend="cpu")


# --- large inputs run in stripes -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_striped_layers_equal_whole_layers(monkeypatch, dtype):
    """With tiny stripe thresholds every full-resolution layer runs in stripes; nothing changes."""
    from lama_fast.fast import layers

    generator = random_generator(tiny_config(), seed=2)
    x = _input((2, 4, 72, 40), seed=8)
    whole = lama_fast.optimize(generator, backend="cpu", dtype=dtype)(x.to(dtype))
    monkeypatch.setattr(layers, "STRIPE_ABOVE_BYTES", 1024)
    monkeypatch.setattr(layers, "STRIPE_BYTES", 2048)
    calls = []
    into, rows = layers.PackedConv.into, layers.PackedConv.output_rows
    monkeypatch.setattr(layers.PackedConv, "into", lambda self, *a: calls.append("into") or into(self, *a))
    monkeypatch.setattr(layers.PackedConv, "output_rows", lambda self, *a: calls.append("rows") or rows(self, *a))
    striped = lama_fast.optimize(generator, backend="cpu", dtype=dtype)(x.to(dtype))
    # Stripes of single layers (into) and of layer pairs computed row range by row range.
    assert calls.count("into") > 4 and calls.count("rows") > 8
    want = _reference_output(generator, x)
    assert scaled_error(striped, want) <= TOLERANCE[dtype]
    assert scaled_error(striped, whole) <= TOLERANCE[dtype]


@pytest.mark.skipif(BF16_REASON is not None, reason=f"bfloat16 unavailable: {BF16_REASON}")
def test_striped_layers_in_bfloat16(monkeypatch):
    from lama_fast.fast import layers

    generator = random_generator(tiny_config(), seed=2)
    x = _input((1, 4, 72, 40), seed=8).float()
    whole = lama_fast.optimize(generator, backend="cpu", dtype=torch.bfloat16)(x)
    monkeypatch.setattr(layers, "STRIPE_ABOVE_BYTES", 1024)
    monkeypatch.setattr(layers, "STRIPE_BYTES", 2048)
    striped = lama_fast.optimize(generator, backend="cpu", dtype=torch.bfloat16)(x)
    want = _reference_output(generator, x)
    assert striped.dtype == torch.float32
    assert (striped.double() - want).abs().max().item() < 1 / 255
    assert (striped - whole).abs().max().item() < 1 / 255


# --- work buffers kept between calls ---------------------------------------------------------------

def test_outputs_do_not_share_memory_between_calls():
    fast = lama_fast.optimize(random_generator(tiny_config(), seed=2), backend="cpu")
    first_input, second_input = _input((1, 4, 32, 32), seed=9).float(), _input((1, 4, 32, 32), seed=10).float()
    first = fast(first_input)
    kept = first.clone()
    second = fast(second_input)
    assert torch.equal(first, kept) and not torch.equal(first, second)
    assert torch.equal(fast(first_input), kept)
    fast.release_buffers()
    assert torch.equal(fast(first_input), kept)
    # The work buffers are not the module's registered buffers (which tell Inpainter the io dtype).
    assert [name for name, _ in fast.named_buffers()] == ["_io_marker"]


def test_threads_share_a_module_safely():
    import threading

    fast = lama_fast.optimize(random_generator(tiny_config(), seed=2), backend="cpu")
    inputs = [_input((1, 4, 40, 24), seed=s).float() for s in range(4)]
    expected = [fast(x) for x in inputs]
    results = [None] * 8

    def work(i):
        for _ in range(3):
            results[i] = fast(inputs[i % 4])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(torch.equal(results[i], expected[i % 4]) for i in range(8))
