"""The reference model against the original implementation's golden vectors and an independent NumPy statement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import numpy_reference as npref
from configs import tiny_config
from lama_fast.model import (
    FFC_BN_ACT, NAMED_CONFIGS, FourierUnit, SpectralTransform, build_generator,
)
from model_cases import golden_batch, golden_generator, golden_module, randomise, scaled_error

# Error allowed against float64 truth, per dtype: |got - want| <= tol * max(1, |want|).
# For outputs in [0, 1] this is an absolute bound; for the module cases, whose
# activations reach ~45, it is a relative one (float32's spacing at 45 is 3.8e-6).
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = [torch.float32, torch.float64]


# --- layout --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["big-lama", "lama-fourier"])
def test_state_dict_matches_released_manifest(golden_dir, name):
    manifest = json.loads((golden_dir / "lama_state_dict_manifest.json").read_text())[name]
    generator = build_generator(name)
    ours = {f"generator.{k}": list(v.shape) for k, v in generator.state_dict().items()}
    assert list(ours) == list(manifest["state_dict"])
    assert ours == manifest["state_dict"]
    assert sum(p.numel() for p in generator.parameters()) == manifest["parameters"]
    assert NAMED_CONFIGS[name] == manifest["config"]


# --- golden vectors from the original code -----------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_generator_matches_golden(golden_dir, golden_case, dtype):
    case = golden_case("inpaint_case")
    generator = golden_generator(golden_dir, dtype)
    # The golden output was made on the padded 64x88 input (61x83 padded symmetrically).
    batch = golden_batch(case, dtype)
    with torch.no_grad():
        out = generator(batch)
    assert out.dtype == dtype
    want = case["generator_output"]
    assert want.std() > 0.05, "the golden output must not be flat"
    assert (out.double() - want).abs().max().item() <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_spectral_transform_matches_golden(golden_case, dtype):
    case, module = golden_module(golden_case, "spectral_case")
    module = module.to(dtype)
    with torch.no_grad():
        out = module(case["input"].to(dtype))
    assert scaled_error(out, case["output"]) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_ffc_bn_act_matches_golden(golden_case, dtype):
    case, module = golden_module(golden_case, "ffc_case")
    module = module.to(dtype)
    with torch.no_grad():
        out_l, out_g = module((case["input_local"].to(dtype), case["input_global"].to(dtype)))
    assert scaled_error(out_l, case["output_local"]) <= TOLERANCE[dtype]
    assert scaled_error(out_g, case["output_global"]) <= TOLERANCE[dtype]


# --- options the golden vectors do not cover, against the NumPy statement ----------------

@pytest.mark.parametrize("norm", ["ortho", "forward", "backward"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fourier_unit_fft_norm(norm, dtype):
    module = randomise(FourierUnit(6, 6, fft_norm=norm), seed=1)
    x = torch.randn(2, 6, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    want = npref.fourier_unit(x.numpy(), module.state_dict(), "", norm)
    with torch.no_grad():
        got = module.to(dtype)(x.to(dtype))
    assert scaled_error(got, torch.from_numpy(want)) <= TOLERANCE[dtype]


def test_fft_norm_changes_the_result():
    a = randomise(FourierUnit(6, 6, fft_norm="ortho"), seed=1)
    b = randomise(FourierUnit(6, 6, fft_norm="backward"), seed=1)
    x = torch.randn(1, 6, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        assert (a.double()(x) - b.double()(x)).abs().max() > 1e-3


@pytest.mark.parametrize(
    "stride,lfu,size",
    [(1, False, (7, 9)), (2, False, (14, 19)), (1, True, (8, 8)), (2, True, (12, 12))],
)
@pytest.mark.parametrize("dtype", DTYPES)
def test_spectral_transform_stride_and_lfu(stride, lfu, size, dtype):
    module = randomise(SpectralTransform(12, 16, stride=stride, enable_lfu=lfu, fft_norm="ortho"), seed=3)
    x = torch.randn(2, 12, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    want = npref.spectral_transform(x.numpy(), module.state_dict(), stride=stride, lfu=lfu)
    with torch.no_grad():
        got = module.to(dtype)(x.to(dtype))
    assert got.shape == want.shape
    assert scaled_error(got, torch.from_numpy(want)) <= TOLERANCE[dtype]


def test_lfu_uses_ortho_even_when_the_layer_does_not():
    module = randomise(SpectralTransform(8, 8, enable_lfu=True, fft_norm="backward"), seed=5).double()
    assert module.fu.fft_norm == "backward" and module.lfu.fft_norm == "ortho"


def test_lfu_rejects_shapes_the_original_cannot_tile():
    module = randomise(SpectralTransform(8, 8, enable_lfu=True), seed=5)
    with pytest.raises(ValueError, match=r"needs a square feature map with an even side .* got 4 channels at 6x8"):
        module(torch.randn(1, 8, 6, 8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_gated_ffc(dtype):
    layer = randomise(FFC_BN_ACT(16, 16, 3, 0.5, 0.5, padding=1, activation=True, enable_lfu=False, gated=True), 6)
    sd = layer.state_dict()
    gen = torch.Generator().manual_seed(7)
    x_l = torch.randn(1, 8, 9, 11, dtype=torch.float64, generator=gen)
    x_g = torch.randn(1, 8, 9, 11, dtype=torch.float64, generator=gen)
    xl, xg = x_l.numpy(), x_g.numpy()
    gates = npref.sigmoid(npref.conv1x1(np.concatenate([xl, xg], 1), sd["ffc.gate.weight"], sd["ffc.gate.bias"]))
    g2l, l2g = gates[:, :1], gates[:, 1:]
    out_l = npref.conv_reflect(xl, sd["ffc.convl2l.weight"], 1) + npref.conv_reflect(xg, sd["ffc.convg2l.weight"], 1) * g2l
    out_g = npref.conv_reflect(xl, sd["ffc.convl2g.weight"], 1) * l2g + npref.spectral_transform(xg, sd, "ffc.convg2g.")
    want_l = npref.relu(npref.batchnorm(out_l, sd, "bn_l."))
    want_g = npref.relu(npref.batchnorm(out_g, sd, "bn_g."))
    with torch.no_grad():
        got_l, got_g = layer.to(dtype)((x_l.to(dtype), x_g.to(dtype)))
    assert scaled_error(got_l, torch.from_numpy(want_l)) <= TOLERANCE[dtype]
    assert scaled_error(got_g, torch.from_numpy(want_g)) <= TOLERANCE[dtype]
    # The gate really acts: without it the local output differs.
    assert np.abs(want_l - npref.relu(npref.batchnorm(
        npref.conv_reflect(xl, sd["ffc.convl2l.weight"], 1) + npref.conv_reflect(xg, sd["ffc.convg2l.weight"], 1),
        sd, "bn_l."))).max() > 1e-3


def test_per_stage_ratios_route_global_channels_through_downsampling():
    config = tiny_config(
        init_conv_kwargs={"ratio_gin": 0, "ratio_gout": 0.5, "enable_lfu": False},
        downsample_conv_kwargs={"ratio_gin": 0.5, "ratio_gout": 0.5, "enable_lfu": False},
        resnet_conv_kwargs={"ratio_gin": 0.25, "ratio_gout": 0.25, "enable_lfu": False, "fft_norm": "forward"},
    )
    generator = randomise(build_generator(config), seed=8).double()
    keys = generator.state_dict().keys()
    # The first layer now has a global output, and each downsampling layer a stride-2 spectral branch.
    assert "model.1.bn_g.weight" in keys
    assert "model.2.ffc.convg2g.conv1.0.weight" in keys
    assert generator.model[2].ffc.convg2g.stride == 2
    assert generator.model[4].conv1.ffc.convg2g.fu.fft_norm == "forward"
    # Layer 2 (stride 2, global in and out) against the NumPy statement.
    layer = generator.model[2]
    sd = layer.state_dict()
    gen = torch.Generator().manual_seed(9)
    x_l = torch.randn(1, 4, 14, 18, dtype=torch.float64, generator=gen)
    x_g = torch.randn(1, 4, 14, 18, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        got_l, got_g = layer((x_l, x_g))
    xl, xg = x_l.numpy(), x_g.numpy()
    want_l = npref.batchnorm(npref.conv_reflect(xl, sd["ffc.convl2l.weight"], 1, 2)
                             + npref.conv_reflect(xg, sd["ffc.convg2l.weight"], 1, 2), sd, "bn_l.")
    want_g = npref.batchnorm(npref.conv_reflect(xl, sd["ffc.convl2g.weight"], 1, 2)
                             + npref.spectral_transform(xg, sd, "ffc.convg2g.", stride=2), sd, "bn_g.")
    assert scaled_error(got_l, torch.from_numpy(npref.relu(want_l))) <= 1e-10
    assert scaled_error(got_g, torch.from_numpy(npref.relu(want_g))) <= 1e-10
    with torch.no_grad():
        out = generator(torch.rand(1, 4, 24, 40, dtype=torch.float64))
    assert out.shape == (1, 3, 24, 40)


def test_lfu_and_gated_generators_build_and_run():
    config = tiny_config(resnet_conv_kwargs={"ratio_gin": 0.75, "ratio_gout": 0.75, "enable_lfu": True,
                                               "gated": True})
    generator = randomise(build_generator(config), seed=10)
    keys = generator.state_dict().keys()
    assert "model.4.conv1.ffc.convg2g.lfu.conv_layer.weight" in keys
    assert "model.4.conv1.ffc.gate.weight" in keys
    with torch.no_grad():
        assert generator(torch.rand(1, 4, 32, 32)).shape == (1, 3, 32, 32)


def test_missing_enable_lfu_defaults_to_the_originals_true():
    config = tiny_config(resnet_conv_kwargs={"ratio_gin": 0.75, "ratio_gout": 0.75})
    assert build_generator(config).model[4].conv1.ffc.convg2g.lfu is not None


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"out_ffc": True}, "unsupported generator option 'out_ffc'"),
        ({"spatial_transform_layers": [0]}, "unsupported generator option 'spatial_transform_layers'"),
        ({"norm_layer": "bn"}, "unsupported generator option(s) 'norm_layer'"),
        ({"resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75, "spectral_pos_encoding": True}},
         "unsupported generator option(s) resnet_conv_kwargs.spectral_pos_encoding"),
        ({"resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75, "fft_norm": "half"}},
         "resnet_conv_kwargs.fft_norm must be one of ('ortho', 'forward', 'backward'), got 'half'"),
        ({"kind": "pix2pixhd_global"}, "unsupported generator kind 'pix2pixhd_global'"),
        ({"init_conv_kwargs": {"ratio_gin": 0.5}}, "init_conv_kwargs.ratio_gin must be 0"),
        ({"downsample_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0.5}},
         "inconsistent ratios: a layer produces 8 global channels but the next one expects 0"),
        ({"resnet_conv_kwargs": {"ratio_gin": 1.5}}, "resnet_conv_kwargs.ratio_gin must be a number in [0, 1]"),
    ],
)
def test_unsupported_or_invalid_options_are_named(changes, message):
    with pytest.raises(ValueError) as info:
        build_generator(tiny_config(**changes))
    assert message in str(info.value)


def test_unknown_named_model():
    with pytest.raises(ValueError, match="unknown model 'huge-lama'; named models are big-lama, lama-fourier"):
        build_generator("huge-lama")


def test_default_valued_original_options_are_accepted():
    generator = build_generator(tiny_config(kind="ffc_resnet", out_ffc=False, spatial_transform_layers=None,
                                              max_features=1024))
    assert generator.config["ngf"] == 8
