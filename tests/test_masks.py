"""The ReLU bit masks (lama_fast::relu_mask, ::apply_mask) against a torch statement of the layout:
exact bits, odd row lengths, special values, row bands, any memory format, errors, fake kernels."""

from __future__ import annotations

import re

import pytest
import torch

from lama_fast.ops.masks import apply_mask, mask_shape, masks_reasons, relu_mask

REASONS = masks_reasons()
pytestmark = pytest.mark.skipif(bool(REASONS), reason=f"mask ops unavailable: {'; '.join(REASONS)}")

DTYPES = [torch.float32, torch.float64, torch.bfloat16]
# (N, C, H, W): W * C odd (a partial last byte), a multiple of 8, one element per row, and rows long
# enough for several tasks of the thread pool.
SHAPES = [(2, 3, 4, 5), (1, 8, 3, 2), (1, 1, 3, 1), (3, 7, 6, 13), (2, 64, 40, 33)]


def reference_mask(x: torch.Tensor) -> torch.Tensor:
    """The documented layout, from torch ops: (x > 0) per row in channels-last order, packed LSB first."""
    n, c, h, w = x.shape
    positive = (x > 0).permute(0, 2, 3, 1).reshape(n, h, w * c)
    row_bytes = (w * c + 7) // 8
    padded = torch.zeros(n, h, row_bytes * 8, dtype=torch.bool)
    padded[:, :, : w * c] = positive
    weights = 2 ** torch.arange(8, dtype=torch.int64)
    return (padded.reshape(n, h, row_bytes, 8).long() * weights).sum(-1).to(torch.uint8)


def _data(shape, dtype, seed=0):
    """Signed data with zeros, signed zeros, infinities, NaNs and subnormals sprinkled in."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    specials = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), float("-nan"), 1e-40, -1e-40,
                             torch.finfo(dtype).tiny, -torch.finfo(dtype).tiny], dtype=torch.float64)
    flat = x.view(-1)
    picks = torch.randint(0, flat.numel(), (min(flat.numel(), 3 * len(specials)),), generator=gen)
    flat[picks] = specials.repeat(3)[: len(picks)]
    return x.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_bits_match_the_layout(shape, dtype):
    x = _data(shape, dtype)
    want = reference_mask(x)
    got = relu_mask(x)
    assert got.dtype == torch.uint8 and tuple(got.shape) == mask_shape(shape) == tuple(want.shape)
    assert torch.equal(got, want)
    assert torch.equal(relu_mask(x.contiguous(memory_format=torch.channels_last)), want)


def test_unused_bits_of_the_last_byte_are_zero():
    x = torch.ones(1, 3, 2, 5)  # 15 elements a row: bit 7 of byte 1 is past the row
    assert relu_mask(x).tolist() == [[[255, 127], [255, 127]]]


def test_special_values():
    values = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-45, -1e-45, 3.0]
    for dtype in DTYPES:
        x = torch.tensor(values, dtype=dtype).view(1, 8, 1, 1)
        # > 0: +inf, the smallest subnormal (0 in bfloat16, which rounds it to zero) and 3.
        subnormal = 0 if dtype == torch.bfloat16 else 1 << 5
        assert relu_mask(x).tolist() == [[[(1 << 2) | subnormal | (1 << 7)]]], dtype


def test_any_memory_format_and_strides():
    x = _data((2, 6, 9, 10), torch.float32, seed=1)
    want = reference_mask(x)
    assert torch.equal(relu_mask(x.contiguous(memory_format=torch.channels_last)), want)
    view = _data((2, 9, 12, 10), torch.float32, seed=2)[:, 1:7, 2:11]  # neither layout contiguous
    assert torch.equal(relu_mask(view), reference_mask(view))


def test_bands_of_rows_are_bands_of_the_mask():
    x = _data((2, 5, 11, 7), torch.float32, seed=3)
    whole = relu_mask(x)
    assembled = torch.zeros_like(whole)
    for start, stop in [(0, 3), (3, 4), (4, 11)]:
        band = relu_mask(x[:, :, start:stop])
        assert torch.equal(band, whole[:, start:stop])
        assembled[:, start:stop] = band
    assert torch.equal(assembled, whole)


def test_same_result_on_one_thread():
    x = _data((2, 64, 40, 33), torch.float32, seed=4)
    grad = torch.randn(x.shape)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = relu_mask(x), apply_mask(grad, relu_mask(x))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single[0], relu_mask(x))
    assert torch.equal(single[1], apply_mask(grad, relu_mask(x)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_apply_mask_is_exact(shape, dtype):
    x = _data(shape, dtype, seed=5)
    grad = _data(shape, dtype, seed=6)  # NaN and infinities too: masked ones must become 0
    before = grad.clone()
    got = apply_mask(grad, relu_mask(x))
    want = torch.where(x > 0, grad, torch.zeros((), dtype=dtype))
    assert got.dtype == dtype and got.shape == grad.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got.isnan(), want.isnan())
    assert torch.equal(got.nan_to_num(), want.nan_to_num())
    assert torch.equal(grad.nan_to_num(), before.nan_to_num()), "apply_mask wrote into grad"


@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "strided"])
def test_apply_mask_never_writes_grad(layout):
    x = torch.randn(2, 5, 6, 7)
    source = torch.randn(2, 5, 6, 9)
    grad = {"channels_last": source[..., :7].contiguous(memory_format=torch.channels_last),
            "contiguous": source[..., :7].contiguous(), "strided": source[..., 1:8]}[layout]
    before = grad.clone()
    got = apply_mask(grad, relu_mask(x))
    assert got.data_ptr() != grad.data_ptr()
    assert torch.equal(grad, before)
    assert torch.equal(got, torch.where(x > 0, grad, 0.0))
    assert got.is_contiguous(memory_format=torch.channels_last)


def test_apply_mask_with_a_band_of_a_larger_mask():
    x = torch.randn(3, 4, 10, 5)
    grad = torch.randn(3, 4, 4, 5)
    bits = relu_mask(x)[:, 3:7]  # not contiguous: rows of each sample are a slice
    assert not bits.is_contiguous()
    assert torch.equal(apply_mask(grad, bits), torch.where(x[:, :, 3:7] > 0, grad, 0.0))


def test_empty_tensors():
    assert relu_mask(torch.randn(2, 3, 0, 4)).shape == (2, 0, 2)
    assert relu_mask(torch.randn(2, 0, 3, 4)).shape == (2, 3, 0)
    grad = torch.randn(0, 3, 2, 2)
    assert apply_mask(grad, relu_mask(grad)).shape == grad.shape


def test_errors():
    grad = torch.randn(1, 3, 5, 7)
    wrong = relu_mask(torch.randn(1, 3, 4, 7))
    message = "apply_mask: bits of shape [1, 4, 3] do not match grad of shape [1, 3, 5, 7] (expected [1, 5, 3])"
    with pytest.raises(RuntimeError, match=re.escape(message)):
        apply_mask(grad, wrong)
    with pytest.raises(RuntimeError, match=re.escape("apply_mask: expected uint8 bits from relu_mask, got Bool")):
        apply_mask(grad, torch.zeros(1, 5, 3, dtype=torch.bool))
    with pytest.raises(RuntimeError, match=re.escape("relu_mask: expected x of shape (N, C, H, W), got [3, 5, 7]")):
        relu_mask(grad[0])
    with pytest.raises(RuntimeError, match=re.escape(
            "relu_mask: expected x of dtype float32, float64 or bfloat16, got Half")):
        relu_mask(grad.half())
    with pytest.raises(RuntimeError, match=re.escape(
            "apply_mask: expected grad of dtype float32, float64 or bfloat16, got Int")):
        apply_mask(grad.int(), relu_mask(grad))


def test_fake_kernels_and_opcheck():
    x = torch.randn(2, 3, 4, 5)
    bits = relu_mask(x)
    meta_bits = torch.ops.lama_fast.relu_mask.default(x.to("meta"))
    assert meta_bits.shape == bits.shape and meta_bits.dtype == torch.uint8
    meta_grad = torch.ops.lama_fast.apply_mask.default(x.to("meta"), bits.to("meta"))
    assert meta_grad.shape == x.shape and meta_grad.is_contiguous(memory_format=torch.channels_last)
    torch.library.opcheck(torch.ops.lama_fast.relu_mask.default, (x,))
    torch.library.opcheck(torch.ops.lama_fast.relu_mask.default, (x.bfloat16(),))
    torch.library.opcheck(torch.ops.lama_fast.apply_mask.default, (torch.randn(2, 3, 4, 5), bits))
