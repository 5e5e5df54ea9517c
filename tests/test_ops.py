"""The compiled ops lama_fast::spectral_transform and lama_fast::fourier_unit against float64 truth.

The truth is lama_fast.ops.reference (the ops' math in float64 PyTorch), itself
checked here against tests/numpy_reference.py (an independent float64 NumPy
statement of the modules) on module-shaped cases.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import numpy_reference as npref
from lama_fast.model.ffc import FourierUnit, SpectralTransform
from lama_fast.ops.reference import (fourier_unit_reference, plain_spectral_transform,
                                     spectral_transform_reference)
from op_cases import check_output, require_extension, shape_id
from model_cases import randomise

require_extension()

from lama_fast.ops import spectral  # noqa: E402  (after the skip: it needs the extension)

NORMS = ("ortho", "forward", "backward")
# max |got - want| / max |want| against float64 truth.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
# bfloat16: at most twice the error of plain PyTorch doing the same math, plus this.
BF16_FLOOR = 1e-3
# The ways to call the op: (relu, bias, other, channels_last input).
VARIANTS = [
    (False, False, False, False), (True, True, True, True), (False, True, False, True), (True, False, True, False),
]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max()).item()


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (out, in), bias) of a bias-free 1x1 conv followed by eval-mode BatchNorm, in float64."""
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv.weight.detach().double()[:, :, 0, 0] * scale[:, None]
    return weight, bn.bias.detach().double() - bn.running_mean.double() * scale


def folded_spectral(st: SpectralTransform, dtype: torch.dtype) -> list[torch.Tensor]:
    """w1, b1, w_freq, b_freq, w2 of a SpectralTransform with its BatchNorms folded in."""
    conv, bn, _ = st.conv1
    w1, b1 = fold(conv, bn)
    w_freq, b_freq = fold(st.fu.conv_layer, st.fu.bn)
    w2 = st.conv2.weight.detach().double()[:, :, 0, 0]
    return [t.to(dtype).contiguous() for t in (w1, b1, w_freq, b_freq, w2)]


def random_weights(cin: int, ch: int, cout: int, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tensors = [
        torch.randn(ch, cin, generator=gen) / cin**0.5,
        0.1 * torch.randn(ch, generator=gen),
        torch.randn(2 * ch, 2 * ch, generator=gen) / (2 * ch) ** 0.5,
        0.1 * torch.randn(2 * ch, generator=gen),
        torch.randn(cout, ch, generator=gen) / ch**0.5,
    ]
    return [t.to(dtype) for t in tensors]


# --- parity --------------------------------------------------------------------------------

# (batch, Cin, Cout, H, W); the module's hidden width is Ch = Cout // 2 = 6. W = 83 has a
# prime factor too large for the op's own FFT and takes ATen's.
MODULE_CASES = [(1, 7, 12, 12, 20), (2, 12, 12, 7, 9), (1, 12, 12, 61, 83)]


def module_cases(test):
    """The test for every MODULE_CASES entry, norm and dtype (float32, float64)."""
    test = pytest.mark.parametrize("dtype", [torch.float32, torch.float64])(test)
    test = pytest.mark.parametrize("norm", NORMS)(test)
    return pytest.mark.parametrize("case", MODULE_CASES, ids=shape_id)(test)


def module_case(case, norm):
    """A randomised SpectralTransform for a MODULE_CASES entry, its float32 input and the generator that drew it."""
    batch, cin, cout, h, w = case
    st = randomise(SpectralTransform(cin, cout, fft_norm=norm), seed=cin * h + w)
    gen = torch.Generator().manual_seed(h * w)
    return st, torch.randn(batch, cin, h, w, generator=gen), gen


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("case", MODULE_CASES, ids=shape_id)
def test_references_match_numpy(case, norm):
    """The references of both ops, on a module's folded float64 weights, are the NumPy statement of the module."""
    st, x, _ = module_case(case, norm)
    x = x.double()
    want = npref.spectral_transform(x.numpy(), st.state_dict(), norm=norm)
    got = spectral_transform_reference(x, *folded_spectral(st, torch.float64), fft_norm=norm)
    assert relative_error(got, torch.from_numpy(want)) <= TOLERANCE[torch.float64]
    y = x[:, : case[2] // 2]
    want = npref.fourier_unit(y.numpy(), st.state_dict(), "fu.", norm)
    got = fourier_unit_reference(y, *fold(st.fu.conv_layer, st.fu.bn), norm)
    assert relative_error(got, torch.from_numpy(want)) <= TOLERANCE[torch.float64]


@module_cases
def test_spectral_transform_module_cases(case, norm, dtype):
    batch, cin, cout, h, w = case
    st, x, gen = module_case(case, norm)
    weights = folded_spectral(st, dtype)
    x = x.to(dtype)
    for relu, use_bias, use_other, channels_last in VARIANTS:
        bias = torch.randn(cout, generator=gen).to(dtype) if use_bias else None
        other = torch.randn(batch, cout, h, w, generator=gen).to(dtype) if use_other else None
        want = spectral_transform_reference(x, *weights, bias, other, relu, norm)
        xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        out = spectral.spectral_transform(xin, *weights, bias, other, relu, norm)
        check_output(out, (batch, cout, h, w), dtype)
        assert relative_error(out, want) <= TOLERANCE[dtype], (relu, use_bias, use_other)


@module_cases
def test_fourier_unit_module_cases(case, norm, dtype):
    batch, _, channels, h, w = case
    fu = randomise(FourierUnit(channels, channels, fft_norm=norm), seed=h + w)
    w_freq, b_freq = (t.to(dtype).contiguous() for t in fold(fu.conv_layer, fu.bn))
    x = torch.randn(batch, channels, h, w, generator=torch.Generator().manual_seed(h)).to(dtype)
    want = fourier_unit_reference(x, w_freq, b_freq, norm)
    for xin in (x, x.contiguous(memory_format=torch.channels_last)):
        out = spectral.fourier_unit(xin, w_freq, b_freq, norm)
        check_output(out, x.shape, dtype)
        assert relative_error(out, want) <= TOLERANCE[dtype]


# (batch, Cin, Ch, Cout, H, W): every radix of the op's FFT (4, 2, 3, generic 5, 7, 11, 13,
# 61), odd and even W, 1-point axes, several row chunks and column groups, channel blocks.
SIZE_CASES = [(1, 5, 3, 4, 1, 1), (1, 5, 3, 4, 2, 2), (1, 5, 3, 4, 1, 8), (2, 5, 3, 4, 9, 1), (1, 6, 4, 5, 13, 11),
              (1, 4, 5, 6, 61, 10), (1, 8, 7, 8, 5, 50), (1, 8, 9, 8, 49, 14), (2, 8, 4, 8, 48, 80),
              (1, 24, 20, 16, 32, 96), (1, 16, 64, 16, 256, 2)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", SIZE_CASES, ids=shape_id)
def test_spectral_transform_sizes(case, dtype):
    batch, cin, ch, cout, h, w = case
    weights = random_weights(cin, ch, cout, dtype, seed=h * w)
    gen = torch.Generator().manual_seed(h + w)
    x = torch.randn(batch, cin, h, w, generator=gen).to(dtype)
    other = torch.randn(batch, cout, h, w, generator=gen).to(dtype)
    bias = torch.randn(cout, generator=gen).to(dtype)
    for norm, relu in (("ortho", True), ("backward", False)):
        out = spectral.spectral_transform(x, *weights, bias, other, relu, norm)
        check_output(out, (batch, cout, h, w), dtype)
        want = spectral_transform_reference(x, *weights, bias, other, relu, norm)
        assert relative_error(out, want) <= TOLERANCE[dtype], norm
    fu_in = x[:, :ch] if cin >= ch else torch.randn(batch, ch, h, w, generator=gen).to(dtype)
    out = spectral.fourier_unit(fu_in, weights[2], weights[3], "forward")
    check_output(out, fu_in.shape, dtype)
    want = fourier_unit_reference(fu_in, weights[2], weights[3], "forward")
    assert relative_error(out, want) <= TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("case", [(1, 8, 7, 8, 5, 50), (2, 8, 4, 8, 48, 80), (1, 12, 6, 12, 61, 83)], ids=shape_id)
def test_spectral_transform_into_equals_the_op(case, dtype):
    """The output accumulated into ``other`` is the op's own: bit for bit in float32 (the same oneDNN calls), within
    rounding where plain ATen GEMMs add the terms in another order (float64, bfloat16 without oneDNN's)."""
    batch, cin, ch, cout, h, w = case
    weights = random_weights(cin, ch, cout, dtype, seed=h + w)
    gen = torch.Generator().manual_seed(h * w)
    x = torch.randn(batch, cin, h, w, generator=gen).to(dtype)
    bias = torch.randn(cout, generator=gen).to(dtype)
    for norm, relu, with_bias in (("ortho", True, True), ("backward", False, False)):
        other = torch.randn(batch, cout, h, w, generator=gen).to(dtype).contiguous(memory_format=torch.channels_last)
        want = spectral.spectral_transform(x, *weights, bias if with_bias else None, other, relu, norm)
        target = other.clone()
        got = spectral.spectral_transform_into(x, *weights, bias if with_bias else None, target, relu, norm)
        assert got is target, norm
        if dtype == torch.float32:
            assert torch.equal(got, want), norm
        else:
            assert relative_error(got, want) <= {torch.float64: 1e-15, torch.bfloat16: 2 ** -7}[dtype], norm


def test_spectral_transform_into_errors():
    x, weights, bias, other = small_args()
    with pytest.raises(RuntimeError, match=re.escape(
            "spectral_transform_into: other must be channels_last contiguous")):
        spectral.spectral_transform_into(x, *weights, bias, other.contiguous(), True, "ortho")
    with pytest.raises(RuntimeError, match=re.escape(
            "spectral_transform_into: no gradient is recorded; use spectral_transform for tensors that require grad")):
        spectral.spectral_transform_into(x.requires_grad_(), *weights, bias, other, True, "ortho")
    meta = other.to("meta").contiguous(memory_format=torch.channels_last)
    assert torch.ops.lama_fast.spectral_transform_into.default(
        x.detach().to("meta"), *(w.to("meta") for w in weights), None, meta, True, "ortho") is None
    target = other.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.lama_fast.spectral_transform_into.default,
                          (x.detach(), *weights, bias, target, True, "ortho"))


def test_matches_reference_module_float32():
    st = randomise(SpectralTransform(32, 48), seed=3)
    x = torch.randn(2, 32, 24, 40, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = st(x)
    out = spectral.spectral_transform(x, *folded_spectral(st, torch.float32))
    check_output(out, want.shape, torch.float32)
    assert relative_error(out, want) <= TOLERANCE[torch.float32]


# (batch, Cin, Ch, Cout, H, W)
BF16_CASES = [(1, 7, 6, 12, 12, 20), (2, 12, 6, 12, 7, 9), (1, 12, 6, 12, 61, 83), (1, 64, 120, 32, 256, 4)]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("case", BF16_CASES, ids=shape_id)
def test_bfloat16_within_twice_plain_pytorch(case, norm):
    batch, cin, ch, cout, h, w = case
    weights = random_weights(cin, ch, cout, torch.bfloat16, seed=h * w)
    gen = torch.Generator().manual_seed(w)
    x = torch.randn(batch, cin, h, w, generator=gen).bfloat16()
    for relu, use_bias, use_other, channels_last in VARIANTS:
        bias = torch.randn(cout, generator=gen).bfloat16() if use_bias else None
        other = torch.randn(batch, cout, h, w, generator=gen).bfloat16() if use_other else None
        xin = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        out = spectral.spectral_transform(xin, *weights, bias, other, relu, norm)
        check_output(out, (batch, cout, h, w), torch.bfloat16)
        want = spectral_transform_reference(x, *weights, bias, other, relu, norm)
        plain = relative_error(plain_spectral_transform(x, *weights, bias, other, relu, norm, torch.float32), want)
        assert relative_error(out, want) <= 2 * plain + BF16_FLOOR, (relu, use_bias, use_other)
    fu_in = torch.randn(batch, ch, h, w, generator=gen).bfloat16()
    out = spectral.fourier_unit(fu_in, weights[2], weights[3], norm)
    check_output(out, fu_in.shape, torch.bfloat16)
    want = fourier_unit_reference(fu_in, weights[2], weights[3], norm)
    assert relative_error(out, want) <= 2 ** -7


# --- buffers, threads, edge cases --------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reused_work_buffers_are_overwritten(dtype):
    """The op keeps work buffers between calls: NaNs left there must not reach a later output."""
    gen = torch.Generator().manual_seed(0)
    big = random_weights(8, 6, 8, dtype, seed=1)
    spectral.spectral_transform(torch.full((2, 8, 40, 36), float("nan"), dtype=dtype), *big)
    spectral.fourier_unit(torch.full((2, 6, 40, 36), float("nan"), dtype=dtype), big[2], big[3])
    for shape in [(1, 8, 16, 12), (2, 8, 40, 36), (1, 8, 7, 5)]:
        x = torch.randn(shape, generator=gen).to(dtype)
        out = spectral.spectral_transform(x, *big, None, None, False, "ortho")
        check_output(out, shape, dtype)
        want = spectral_transform_reference(x, *big, None, None, False, "ortho")
        assert relative_error(out, want) <= (TOLERANCE[dtype] if dtype != torch.bfloat16 else 2e-2)
        fu = spectral.fourier_unit(x[:, :6], big[2], big[3])
        check_output(fu, (shape[0], 6) + shape[2:], dtype)


def test_thread_count_does_not_change_the_result():
    weights = random_weights(16, 24, 16, torch.float32, seed=5)
    x = torch.randn(2, 16, 36, 50, generator=torch.Generator().manual_seed(6))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = spectral.spectral_transform(x, *weights)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(spectral.spectral_transform(x, *weights), single, rtol=1e-6, atol=1e-6)


def test_empty_batch():
    weights = random_weights(5, 3, 4, torch.float32, seed=0)
    out = spectral.spectral_transform(torch.empty(0, 5, 6, 7), *weights)
    assert out.shape == (0, 4, 6, 7) and out.is_contiguous(memory_format=torch.channels_last)


def test_noncontiguous_inputs():
    weights = random_weights(6, 4, 5, torch.float64, seed=2)
    x = torch.randn(1, 6, 20, 18, dtype=torch.float64)[:, :, ::2, 1:17]
    other = torch.randn(1, 5, 16, 10, dtype=torch.float64).transpose(2, 3)
    w1 = weights[0].t().contiguous().t()
    out = spectral.spectral_transform(x, w1, *weights[1:], None, other, True, "ortho")
    want = spectral_transform_reference(x, *weights, None, other, True, "ortho")
    assert relative_error(out, want) <= TOLERANCE[torch.float64]


# --- registration: opcheck, torch.compile, meta tensors ---------------------------------------

def small_args(dtype=torch.float32):
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 6, 8, 10, generator=gen).to(dtype)
    weights = random_weights(6, 4, 5, dtype, seed=8)
    bias = torch.randn(5, generator=gen).to(dtype)
    other = torch.randn(2, 5, 8, 10, generator=gen).to(dtype)
    return x, weights, bias, other


def test_opcheck_spectral_transform():
    x, weights, bias, other = small_args()
    torch.library.opcheck(torch.ops.lama_fast.spectral_transform.default, (x, *weights, bias, other, True, "ortho"))
    torch.library.opcheck(torch.ops.lama_fast.spectral_transform.default, (x, *weights, None, None, False, "forward"))


def test_opcheck_fourier_unit():
    x, weights, _, _ = small_args()
    torch.library.opcheck(torch.ops.lama_fast.fourier_unit.default, (x[:, :4], weights[2], weights[3], "backward"))


def test_torch_compile_traces_the_ops():
    x, weights, bias, other = small_args()

    def block(x):
        out = spectral.spectral_transform(x, *weights, bias, other, True, "ortho")
        return out + spectral.fourier_unit(out[:, :4], weights[2], weights[3], "ortho").sum()

    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), block(x))


def test_meta_tensors():
    x, weights, bias, other = small_args()
    meta = lambda t: t.to("meta")  # noqa: E731
    out = spectral.spectral_transform(meta(x), *map(meta, weights), meta(bias), meta(other), False, "ortho")
    assert out.device.type == "meta" and out.shape == (2, 5, 8, 10)
    assert out.is_contiguous(memory_format=torch.channels_last)
    fu = spectral.fourier_unit(meta(x), meta(torch.randn(12, 12)), meta(torch.randn(12)))
    assert fu.shape == x.shape and fu.is_contiguous(memory_format=torch.channels_last)


# --- errors --------------------------------------------------------------------------------

def spectral_error(**changes):
    x, (w1, b1, w_freq, b_freq, w2), bias, other = small_args()
    args = dict(x=x, w1=w1, b1=b1, w_freq=w_freq, b_freq=b_freq, w2=w2, bias=bias, other=other, relu=False,
                fft_norm="ortho")
    args.update(changes)
    with pytest.raises(RuntimeError) as info:
        spectral.spectral_transform(**args)
    return str(info.value)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(w_freq=torch.randn(8, 6)),
         "spectral_transform: w_freq must have shape [8, 8] (2*Ch, 2*Ch where Ch = 4 from w1), got [8, 6]"),
        (dict(w1=torch.randn(4, 6, dtype=torch.float64)),
         "spectral_transform: w1 must have the dtype of x (torch.float32), got torch.float64"),
        (dict(fft_norm="bogus"),
         'spectral_transform: fft_norm must be "ortho", "forward" or "backward", got "bogus"'),
        (dict(x=torch.randn(6, 8, 10)),
         "spectral_transform: x must be a 4-D (N, C, H, W) tensor, got shape [6, 8, 10]"),
        (dict(x=torch.randn(2, 6, 8, 10).half()),
         "spectral_transform: x must have dtype torch.float32, torch.float64 or torch.bfloat16, got torch.float16"),
        (dict(w1=torch.randn(4, 7)),
         "spectral_transform: w1 must have shape [Ch, 6] (Ch, Cin where Cin = 6 channels of x), got [4, 7]"),
        (dict(b_freq=torch.randn(4)),
         "spectral_transform: b_freq must have shape [8] (2*Ch where Ch = 4 from w1), got [4]"),
        (dict(w2=torch.randn(5, 3)),
         "spectral_transform: w2 must have shape [Cout, 4] (Cout, Ch where Ch = 4 from w1), got [5, 3]"),
        (dict(bias=torch.randn(4)),
         "spectral_transform: bias must have shape [5] (Cout where Cout = 5 from w2), got [4]"),
        (dict(other=torch.randn(2, 5, 10, 8)),
         "spectral_transform: other must have shape [2, 5, 8, 10] (N, Cout, H, W of the output), got [2, 5, 10, 8]"),
    ],
    ids=["w_freq-shape", "dtype", "fft_norm", "x-dims", "x-dtype", "w1-shape", "b_freq-shape", "w2-shape",
         "bias-shape", "other-shape"],
)
def test_spectral_transform_errors(changes, message):
    assert message in spectral_error(**changes)


def test_fourier_unit_errors():
    x = torch.randn(1, 4, 6, 6)
    with pytest.raises(RuntimeError, match=re.escape(
            "fourier_unit: w_freq must have shape [8, 8] (2*C, 2*C where C = 4 channels of x), got [8, 7]")):
        spectral.fourier_unit(x, torch.randn(8, 7), torch.randn(8))
    with pytest.raises(RuntimeError, match=re.escape(
            "fourier_unit: b_freq must have the dtype of x (torch.float32), got torch.bfloat16")):
        spectral.fourier_unit(x, torch.randn(8, 8), torch.randn(8).bfloat16())
    with pytest.raises(RuntimeError, match=re.escape(
            'fourier_unit: fft_norm must be "ortho", "forward" or "backward", got "Ortho"')):
        spectral.fourier_unit(x, torch.randn(8, 8), torch.randn(8), "Ortho")


def test_wrappers_are_typed_and_documented():
    for fn in (spectral.spectral_transform, spectral.fourier_unit):
        assert fn.__doc__ and "\n" not in fn.__doc__.strip()
        assert fn.__annotations__["return"] in ("torch.Tensor", torch.Tensor)
