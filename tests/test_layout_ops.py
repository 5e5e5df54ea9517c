"""The layout ops (lama_fast::reflect_pad_into, ::interleave_phases_into, ::reflect_pad_border) against their torch
statements, bit for bit: every dtype, odd sizes, batches, the largest paddings, windows of padded buffers, thread
counts, errors, fake kernels."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from lama_fast.ops.layout import interleave_phases_into, layout_reasons, reflect_pad_border, reflect_pad_into

REASONS = layout_reasons()
pytestmark = pytest.mark.skipif(bool(REASONS), reason=f"layout ops unavailable: {'; '.join(REASONS)}")

CL = torch.channels_last
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.uint8]


def _data(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=gen) * 50).to(dtype).contiguous(memory_format=CL)


def _padded_empty(x, padding):
    left, right, top, bottom = padding
    n, c, h, w = x.shape
    # NaN-filled where possible: every element must be written.
    fill = float("nan") if x.dtype.is_floating_point else 7
    return torch.full((n, c, h + top + bottom, w + left + right), fill, dtype=x.dtype).contiguous(memory_format=CL)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,padding", [
    ((1, 4, 9, 7), (3, 3, 3, 3)),      # the first 7x7 convolution's padding
    ((2, 64, 5, 6), (1, 1, 1, 1)),     # a downsampling layer's
    ((1, 3, 4, 4), (3, 2, 0, 1)),      # uneven, the largest a 4-pixel side allows
    ((3, 1, 2, 11), (1, 0, 1, 1)),     # one channel, two rows
])
def test_reflect_pad_into_is_f_pad(dtype, shape, padding):
    x = _data(shape, torch.float32).to(dtype)
    out = _padded_empty(x, padding)
    got = reflect_pad_into(x, out, padding)
    assert got is out
    want = F.pad(x.double(), padding, mode="reflect").to(dtype)
    assert torch.equal(out, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,padding", [
    ((1, 64, 9, 7), (3, 3, 3, 3)),     # the output convolution's padding
    ((2, 3, 4, 4), (3, 2, 0, 1)),
    ((1, 1, 2, 11), (1, 0, 1, 1)),
])
def test_reflect_pad_border_fills_the_border_of_the_interior(dtype, shape, padding):
    x = _data(shape, torch.float32, seed=3).to(dtype)
    left, right, top, bottom = padding
    buffer = _padded_empty(x, padding)
    buffer[:, :, top:top + shape[2], left:left + shape[3]] = x
    assert reflect_pad_border(buffer, padding) is buffer
    assert torch.equal(buffer, F.pad(x.double(), padding, mode="reflect").to(dtype))


def test_reflect_pad_into_on_one_thread():
    x = _data((2, 16, 33, 21), torch.float32)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = reflect_pad_into(x, _padded_empty(x, (2, 3, 1, 2)), (2, 3, 1, 2))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(single, reflect_pad_into(x, _padded_empty(x, (2, 3, 1, 2)), (2, 3, 1, 2)))


def _phases(n, c, h, w, dtype, shifted):
    """Phases as the upsampling layer makes them: a two-tap axis has one extra leading row/column."""
    return [_data((n, c, h + (a if shifted else 0) + 1, w + (b if shifted else 0) + 2), dtype, seed=2 * a + b)
            for a in range(2) for b in range(2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shifted", [False, True])
@pytest.mark.parametrize("shape", [(1, 64, 5, 7), (2, 3, 1, 1), (1, 5, 8, 3)])
def test_interleave_phases_into(dtype, shifted, shape):
    n, c, h, w = shape
    phases = _phases(n, c, h, w, torch.float32, shifted)
    phases = [p.to(dtype).contiguous(memory_format=CL) for p in phases]
    out = torch.empty((n, c, 2 * h, 2 * w), dtype=dtype).contiguous(memory_format=CL)
    offset = 1 if shifted else 0
    assert interleave_phases_into(*phases, out, offset, offset) is out
    for a in range(2):
        for b in range(2):
            p = phases[2 * a + b]
            want = p[:, :, a * offset:a * offset + h, b * offset:b * offset + w]
            assert torch.equal(out[:, :, a::2, b::2], want)


def test_interleave_into_the_interior_of_a_padded_buffer():
    phases = _phases(2, 8, 5, 6, torch.float32, True)
    padded = torch.full((2, 8, 16, 18), float("nan")).contiguous(memory_format=CL)
    interior = padded[:, :, 3:13, 3:15]
    interleave_phases_into(*phases, interior, 1, 1)
    want = torch.empty(2, 8, 10, 12).contiguous(memory_format=CL)
    interleave_phases_into(*phases, want, 1, 1)
    assert torch.equal(interior, want)
    border = torch.ones_like(padded, dtype=torch.bool)
    border[:, :, 3:13, 3:15] = False
    assert padded[border].isnan().all()  # nothing outside the window was written


def test_errors():
    x = _data((1, 3, 4, 5), torch.float32)
    with pytest.raises(RuntimeError, match=re.escape(
            "reflect_pad_into: each padding must be smaller than the side it reflects, got (5, 0, 0, 0) for 4x5")):
        reflect_pad_into(x, torch.empty(1, 3, 4, 10).contiguous(memory_format=CL), (5, 0, 0, 0))
    with pytest.raises(RuntimeError, match=re.escape(
            "reflect_pad_into: expected out of shape (1, 3, 6, 7), got [1, 3, 6, 8]")):
        reflect_pad_into(x, torch.empty(1, 3, 6, 8).contiguous(memory_format=CL), (1, 1, 1, 1))
    with pytest.raises(RuntimeError, match=re.escape("reflect_pad_into: out must be channels_last contiguous")):
        reflect_pad_into(x, torch.empty(1, 3, 6, 7), (1, 1, 1, 1))
    with pytest.raises(RuntimeError, match=re.escape("reflect_pad_into: x is Float but out is Double")):
        reflect_pad_into(x, torch.empty(1, 3, 6, 7, dtype=torch.float64).contiguous(memory_format=CL), (1, 1, 1, 1))
    phases = _phases(1, 3, 2, 2, torch.float32, True)
    out = torch.empty(1, 3, 4, 4).contiguous(memory_format=CL)
    with pytest.raises(RuntimeError, match=re.escape(
            "interleave_phases_into: phase (1, 0) of shape [1, 3, 4, 4] does not cover 2x2 from (3, 0) for out "
            "[1, 3, 4, 4]")):
        interleave_phases_into(*phases, out, 3, 3)
    with pytest.raises(RuntimeError, match=re.escape(
            "interleave_phases_into: out must be channels_last (or a window of a channels_last tensor)")):
        interleave_phases_into(*phases, torch.empty(1, 3, 4, 4), 1, 1)
    with pytest.raises(RuntimeError, match=re.escape(
            "reflect_pad_border: each padding must be smaller than the side it reflects, got (3, 3, 0, 0) around "
            "2x2 in [1, 3, 2, 8]")):
        reflect_pad_border(torch.empty(1, 3, 2, 8).contiguous(memory_format=CL), (3, 3, 0, 0))
    with pytest.raises(RuntimeError, match=re.escape(
            "interleave_phases_into: out must have an even height and width, got [1, 3, 3, 4]")):
        interleave_phases_into(*phases, torch.empty(1, 3, 3, 4).contiguous(memory_format=CL), 0, 0)


def test_fake_kernels_and_opcheck():
    x = _data((1, 3, 4, 5), torch.float32)
    out = _padded_empty(x, (1, 1, 1, 1))
    assert torch.ops.lama_fast.reflect_pad_into.default(x.to("meta"), out.to("meta"), 1, 1, 1, 1) is None
    torch.library.opcheck(torch.ops.lama_fast.reflect_pad_into.default, (x, out, 1, 1, 1, 1))
    phases = _phases(1, 3, 2, 2, torch.float32, True)
    target = torch.empty(1, 3, 4, 4).contiguous(memory_format=CL)
    torch.library.opcheck(torch.ops.lama_fast.interleave_phases_into.default, (*phases, target, 1, 1))
    torch.library.opcheck(torch.ops.lama_fast.reflect_pad_border.default, (out, 1, 1, 1, 1))
