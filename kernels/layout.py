"""A Triton kernel for the layout work around the GPU generator's convolutions: the reflect padding of a
channels-last tensor, with the cast to the convolution's dtype and zero channels appended, in one pass.

PyTorch's CUDA ``reflection_pad2d`` works on NCHW planes, so a channels-last input costs a transposed copy
on each side of it, and the cast and any channel padding are further passes. Here each program writes
``BLOCK_W`` pixels of one output row, all their channels, reading each input element once.

Importing this module imports triton; ``TRITON_INTERPRET=1`` must be set before that on a machine without
a GPU.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import triton
import triton.language as tl

DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _reflect_pad_nhwc(x_ptr, out_ptr, H, W, C, OH, OW, OC, top, left,
                      sx_n, sx_h, sx_w, so_n, so_h, so_w,
                      BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # n * OH + oy
    n = row // OH
    oy = row % OH
    ox = tl.program_id(1) * BLOCK_W + tl.arange(0, BLOCK_W)
    # Reflection without the edge repeated: -1 -> 1, H -> H - 2 (pads are smaller than the sides).
    iy = oy - top
    iy = tl.where(iy < 0, -iy, iy)
    iy = tl.where(iy >= H, 2 * (H - 1) - iy, iy)
    ix = ox - left
    ix = tl.where(ix < 0, -ix, ix)
    ix = tl.where(ix >= W, 2 * (W - 1) - ix, ix)
    live_x = ox < OW
    src = x_ptr + n * sx_n + iy * sx_h + ix.to(tl.int64)[:, None] * sx_w
    dst = out_ptr + n * so_n + oy * so_h + ox.to(tl.int64)[:, None] * so_w
    for c0 in range(0, OC, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        values = tl.load(src + c[None, :], mask=live_x[:, None] & (c[None, :] < C), other=0.0)
        tl.store(dst + c[None, :], values.to(out_ptr.dtype.element_ty), mask=live_x[:, None] & (c[None, :] < OC))


def reflect_pad_nhwc(x: torch.Tensor, padding: Sequence[int], dtype: Optional[torch.dtype] = None,
                     channels: Optional[int] = None) -> torch.Tensor:
    """``F.pad(x, padding, mode="reflect")`` of a 4-D channels-last ``x`` (``padding`` = (left, right, top,
    bottom), each smaller than its side), cast to ``dtype`` (default ``x``'s) and with zero channels
    appended up to ``channels`` (default ``x``'s): a channels-last tensor, written in one pass."""
    if x.dim() != 4:
        raise ValueError(f"reflect_pad_nhwc takes a 4-D (N, C, H, W) tensor, got {x.dim()} dimensions")
    n, c, h, w = x.shape
    left, right, top, bottom = (int(p) for p in padding)
    if min(left, right, top, bottom) < 0 or max(left, right) >= w or max(top, bottom) >= h:
        raise ValueError(f"reflect padding {tuple(padding)} must be at least 0 and smaller than the input's "
                         f"{h}x{w} sides")
    dtype = x.dtype if dtype is None else dtype
    channels = c if channels is None else int(channels)
    if x.dtype not in DTYPES or dtype not in DTYPES:
        raise ValueError(f"reflect_pad_nhwc takes {', '.join(str(d) for d in DTYPES)}, got {x.dtype} -> {dtype}")
    if channels < c:
        raise ValueError(f"channels ({channels}) must be at least the input's ({c})")
    if x.stride(1) != 1 and c > 1:  # rows of channels with unit stride; any other strides
        x = x.contiguous(memory_format=torch.channels_last)
    oh, ow = h + top + bottom, w + left + right
    out = torch.empty((n, channels, oh, ow), device=x.device, dtype=dtype, memory_format=torch.channels_last)
    if out.numel() == 0:
        return out
    block_c = min(64, triton.next_power_of_2(channels))
    block_w = max(1, min(128, 4096 // block_c, triton.next_power_of_2(ow)))
    grid = (n * oh, triton.cdiv(ow, block_w))
    _reflect_pad_nhwc[grid](x, out, h, w, c, oh, ow, channels, top, left,
                            x.stride(0), x.stride(2), x.stride(3), out.stride(0), out.stride(2), out.stride(3),
                            BLOCK_W=block_w, BLOCK_C=block_c)
    return out
