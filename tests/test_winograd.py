"""The Winograd F(4x4, 3x3) conv ops against their float64 reference (lama_fast.ops.reference.conv3x3_reference):
parity, ragged tiles, fused epilogue, registration."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from lama_fast.ops.reference import conv3x3_reference, plain_conv3x3
from lama_fast.ops.winograd import conv3x3_winograd, winograd_isa, winograd_ops_reasons, winograd_weight

REASONS = winograd_ops_reasons()
pytestmark = pytest.mark.skipif(bool(REASONS), reason=f"Winograd ops unavailable: {'; '.join(REASONS)}")

# Kernels to test: the portable ones always, the AVX2 and best ones where the CPU has them.
ISAS = ["generic", "avx2", "best"]
# Relative error allowed on top of twice float32 F.conv2d's own.
FLOOR = 1e-5


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    """Run the test with the kernels that LAMA_FAST_WINOGRAD_ISA caps the choice to."""
    if request.param == "best":
        monkeypatch.delenv("LAMA_FAST_WINOGRAD_ISA", raising=False)
        if winograd_isa() in ("generic", "avx2"):
            pytest.skip(f"this CPU's best kernels are the {winograd_isa()} ones, tested already")
    else:
        monkeypatch.setenv("LAMA_FAST_WINOGRAD_ISA", request.param)
        if winograd_isa() != request.param:
            pytest.skip(f"this CPU cannot run the {request.param} kernels")
    return winograd_isa()


def _data(n, cin, cout, h, w, seed=0):
    """LaMa's scale: unit-variance activations, weights ~ N(0, 1/(9*Cin)); float64."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, cin, h + 2, w + 2, generator=gen, dtype=torch.float64)
    weight = torch.randn(cout, cin, 3, 3, generator=gen, dtype=torch.float64) / (9 * cin) ** 0.5
    bias = torch.randn(cout, generator=gen, dtype=torch.float64)
    other = torch.randn(n, cout, h, w, generator=gen, dtype=torch.float64)
    return x, weight, bias, other


def _relative_error(got, want):
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def _poison(shape):
    """Fill and free a buffer of the output's size, so that unwritten output elements would likely read NaN."""
    torch.full(shape, float("nan")).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "n, cin, cout, h, w",
    [
        (1, 5, 7, 7, 9),
        (2, 12, 7, 13, 20),
        (1, 12, 7, 61, 83),
        (2, 5, 7, 1, 1),
        (1, 17, 70, 6, 11),  # a tail of input channels; two column blocks, the second ragged
        (1, 200, 130, 5, 9),  # two K blocks; three column blocks
    ],
)
@pytest.mark.parametrize("bias, other, relu", [(False, False, False), (True, False, True), (True, True, True)])
def test_matches_float64_conv(isa, n, cin, cout, h, w, bias, other, relu):
    x, weight, b, o = _data(n, cin, cout, h, w)
    b = b if bias else None
    o = o if other else None
    want = conv3x3_reference(x, weight, b, o, relu)
    torch_error = _relative_error(
        plain_conv3x3(x.float().contiguous(memory_format=torch.channels_last), weight.float(),
                      None if b is None else b.float(), None if o is None else o.float(), relu),
        want,
    )
    packed = winograd_weight(weight.float())
    _poison(want.shape)
    got = conv3x3_winograd(
        x.float().contiguous(memory_format=torch.channels_last),
        packed,
        None if b is None else b.float(),
        None if o is None else o.float(),
        relu,
    )
    assert got.shape == want.shape and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(got).all(), "some output elements were not written"
    error = _relative_error(got, want)
    assert error <= 2 * torch_error + FLOOR, f"relative error {error:.3g}, float32 F.conv2d's {torch_error:.3g}"


@pytest.mark.parametrize("cin, cout", [(512, 128), (128, 384)])
def test_lama_shapes_as_accurate_as_conv2d(cin, cout):
    x, weight, _, _ = _data(1, cin, cout, 21, 24, seed=1)
    want = conv3x3_reference(x, weight)
    x = x.float().contiguous(memory_format=torch.channels_last)
    torch_error = _relative_error(plain_conv3x3(x, weight.float()), want)
    error = _relative_error(conv3x3_winograd(x, winograd_weight(weight.float())), want)
    assert error <= 1e-5 and error <= 2 * torch_error + 1e-6, f"{error:.3g} vs float32 F.conv2d's {torch_error:.3g}"


def test_any_input_layout_and_thread_count():
    x, weight, bias, other = _data(2, 9, 11, 10, 7, seed=2)
    x, weight, bias, other = x.float(), weight.float(), bias.float(), other.float()
    packed = winograd_weight(weight)
    want = conv3x3_winograd(x.contiguous(memory_format=torch.channels_last), packed, bias, other, True)
    assert torch.equal(conv3x3_winograd(x.contiguous(), packed, bias, other.contiguous(), True), want)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = conv3x3_winograd(x, packed, bias, other, True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, want), "the result depends on the number of threads"


def test_opcheck():
    x, weight, bias, other = _data(1, 3, 5, 6, 5, seed=3)
    x, weight, bias, other = x.float(), weight.float(), bias.float(), other.float()
    torch.library.opcheck(torch.ops.lama_fast.winograd_weight.default, (weight,))
    packed = winograd_weight(weight)
    x = x.contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.lama_fast.conv3x3_winograd.default, (x, packed, bias, other, True))
    torch.library.opcheck(torch.ops.lama_fast.conv3x3_winograd.default, (x, packed, None, None, False))


def test_bad_dtype_is_rejected():
    weight = torch.randn(4, 3, 3, 3)
    packed = winograd_weight(weight)
    with pytest.raises(RuntimeError, match=re.escape("conv3x3_winograd: expected float32 x, got Double")):
        conv3x3_winograd(torch.randn(1, 3, 6, 6, dtype=torch.float64), packed)
    with pytest.raises(RuntimeError, match=re.escape("winograd_weight: expected a float32 weight, got Double")):
        winograd_weight(weight.double())


def test_bad_weight_shape_is_rejected():
    message = "winograd_weight: expected a weight of shape (Cout, Cin, 3, 3), got [4, 3, 5, 5]"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        winograd_weight(torch.randn(4, 3, 5, 5))
    with pytest.raises(RuntimeError, match=re.escape("conv3x3_winograd: x has 2 channels, the weight expects 3")):
        conv3x3_winograd(torch.randn(1, 2, 6, 6), winograd_weight(torch.randn(4, 3, 3, 3)))


@pytest.mark.parametrize("n, cin, cout, h, w", [(1, 5, 7, 7, 9), (2, 12, 7, 13, 20), (1, 3, 4, 2, 2), (1, 6, 5, 5, 3),
                                                (1, 17, 9, 61, 83)])
def test_reflect_padding_read_in_place(isa, n, cin, cout, h, w):
    """reflect_pad=1 on the unpadded input gives bit for bit what the pre-padded input gives."""
    padded, weight, bias, _ = _data(n, cin, cout, h, w, seed=5)
    x = padded[:, :, 1:-1, 1:-1].contiguous()
    want = conv3x3_reference(x, weight, bias, None, True, reflect_pad=1)
    packed = winograd_weight(weight.float())
    _poison((n, cout, h, w))
    got = conv3x3_winograd(x.float(), packed, bias.float(), None, True, 1)
    assert got.shape == (n, cout, h, w) and not torch.isnan(got).any()
    pre_padded = conv3x3_winograd(F.pad(x.float(), (1, 1, 1, 1), mode="reflect"), packed, bias.float(), None, True)
    assert torch.equal(got, pre_padded)
    assert _relative_error(got, want) <= 1e-5


def test_opcheck_with_reflect_padding():
    x, weight, bias, other = _data(1, 3, 5, 6, 5, seed=3)
    packed = winograd_weight(weight.float())
    x = x[:, :, 1:-1, 1:-1].float().contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.lama_fast.conv3x3_winograd.default,
                          (x, packed, bias.float(), other.float(), True, 1))


def test_bad_reflect_padding_is_rejected():
    x, weight, _, _ = _data(1, 3, 5, 6, 5)
    with pytest.raises(RuntimeError, match=r"conv3x3_winograd: reflect_pad must be 0 or 1, got 2"):
        conv3x3_winograd(x.float(), winograd_weight(weight.float()), reflect_pad=2)
