"""The cpu backend's generator split for refinement: a no-grad front and a rear with backward kernels.

The rear (residual blocks, the join, the upsampling layers, the output
convolution) runs the fast CPU layers of ``lama_fast.fast`` under autograd:

- the Winograd 3x3 convolutions and the fused spectral transform have their
  own backward (``lama_fast.ops``), which keeps only ReLU masks, one bit per
  element, and never an activation;
- the upsampling layers and the output convolution are autograd functions
  here: oneDNN forward, their input gradient as the adjoint convolution, the
  ReLU masks as bits and the sigmoid's output (three channels) kept;
- the last upsampling layer and the output convolution, the two layers at full
  resolution, run forward and backward in stripes of rows, as the inference
  forward does, so no full-resolution 64-channel tensor is ever held.

Everything but those masks is recomputed or never needed: the input gradient
of a linear layer does not depend on its input.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..fast import FastGenerator
from ..fast import layers as fast_layers
from ..fast.ffc import FastFFC
from ..fast.layers import WORKSPACE, ConvStage, PackedConv
from ..fast.stripes import StripedPair
from ..fast.transpose import PHASE_TAPS, PackedConvTranspose
from ..ops.masks import apply_mask, relu_mask
from ..rewrite import UnsupportedModelError
from ..rewrite.run import (CHANNELS_LAST, ActivationStage, Layer, PadStage, ResidualBlock, ResidualConcat,
                           as_branches, concat_branches)

REFINE_DTYPES = (torch.float32, torch.float64)
# glibc's M_MMAP_THRESHOLD (malloc.h) and the value refine sets: see lean_allocator.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 << 20
_LEAN = []


def lean_allocator() -> bool:
    """Have glibc serve allocations of ``MMAP_THRESHOLD_BYTES`` and more from the system, and give them back
    when freed; True where that was set (Linux with glibc), once per process.

    The backward pass frees and allocates tensors of a few MB to tens of MB, while one-bit ReLU masks of
    a few hundred kB stay alive between them: on glibc's heap the masks pin the freed space, and the
    process grew by about 1.4 GB over two iterations at 1024x768 (measured with big-lama). Served by
    mmap, freed tensors go back to the system at once (a 1024x768 refinement then peaks near 2 GB).
    This stays set for the process: glibc has no way back to its default, adaptive threshold.
    """
    if not _LEAN:
        done = False
        if sys.platform.startswith("linux"):
            try:
                done = bool(ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
            except (OSError, AttributeError):
                done = False
        _LEAN.append(done)
    return _LEAN[0]


def plain_weight(conv: PackedConv) -> torch.Tensor:
    """The (Cout, Cin, kh, kw) weight of a oneDNN-packed or plain convolution, in its dtype."""
    if conv.weight is not None:
        return conv.weight
    if conv.packed is not None:
        return conv.packed.to_dense()
    raise UnsupportedModelError("a Winograd convolution has no plain weight; its gradient runs in lama_fast.ops")


def transpose_weight(layer: PackedConvTranspose) -> torch.Tensor:
    """The (Cin, Cout, 3, 3) weight of an upsampling layer, rebuilt from its four phase convolutions."""
    if layer.phases is None:
        return layer.weight
    first = plain_weight(layer.phases[0][0])
    weight = first.new_empty((first.shape[1], first.shape[0], 3, 3))
    for a in range(2):
        for b in range(2):
            phase = plain_weight(layer.phases[a][b])  # (Cout, Cin, 1 + a, 1 + b)
            for ri, i in enumerate(PHASE_TAPS[a]):
                for cj, j in enumerate(PHASE_TAPS[b]):
                    weight[:, :, i, j] = phase[:, :, ri, cj].t()
    return weight


def pad_adjoint(grad: torch.Tensor, shape: Sequence[int], padding: Tuple[int, int, int, int],
                mode: str) -> torch.Tensor:
    """The gradient of ``x`` (of ``shape``) from the gradient of ``F.pad(x, padding, mode)``."""
    left, right, top, bottom = padding
    if mode == "reflect":
        template = grad.new_empty(tuple(shape))
        return torch.ops.aten.reflection_pad2d_backward(grad, template, list(padding))
    if mode == "replicate":
        template = grad.new_empty(tuple(shape))
        return torch.ops.aten.replication_pad2d_backward(grad, template, list(padding))
    if mode in ("zeros", "constant"):
        height, width = grad.shape[-2:]
        return grad[:, :, top:height - bottom, left:width - right]
    raise UnsupportedModelError(f"the gradient of {mode!r} padding is not supported")


def activation_grad(grad: torch.Tensor, activation: Optional[str], saved) -> torch.Tensor:
    """The gradient before an activation: ``saved`` holds the ReLU mask bits or the sigmoid/tanh output."""
    if activation is None:
        return grad
    if activation == "relu":
        return apply_mask(grad.contiguous(memory_format=CHANNELS_LAST), saved)
    if activation == "sigmoid":
        return grad * saved * (1 - saved)
    if activation == "tanh":
        return grad * (1 - saved * saved)
    raise UnsupportedModelError(f"the gradient of activation {activation!r} is not supported")


def activation_saved(out: torch.Tensor, activation: Optional[str]):
    """What ``activation_grad`` needs from an activation's output."""
    if activation == "relu":
        return relu_mask(out)
    if activation in ("sigmoid", "tanh"):
        return out
    return None


def conv_input_grad(conv: PackedConv, weight: torch.Tensor, grad: torch.Tensor,
                    input_shape: Sequence[int]) -> torch.Tensor:
    """The gradient of a convolution's (unpadded) input from the gradient of its pre-activation output;
    ``weight`` is the convolution's plain weight (``plain_weight``)."""
    pad_l, pad_r, pad_t, pad_b = conv.explicit_padding or (0, 0, 0, 0)
    padded_h, padded_w = input_shape[2] + pad_t + pad_b, input_shape[3] + pad_l + pad_r
    reach = [(k - 1) * d + 1 for k, d in zip(conv.kernel_size, conv.dilation)]
    extra = [(size + 2 * p - r) % s for size, p, r, s in
             zip((padded_h, padded_w), conv.conv_padding, reach, conv.stride)]
    padded = F.conv_transpose2d(grad, weight, None, conv.stride, conv.conv_padding, extra, 1, conv.dilation)
    if conv.explicit_padding is None:
        return padded
    return pad_adjoint(padded, input_shape, conv.explicit_padding, conv.padding_mode)


class _ConvFunction(torch.autograd.Function):
    """``act(conv(pad(x)) + bias)`` of a oneDNN convolution, with its input gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, stage: "ConvAutogradStage") -> torch.Tensor:
        conv, activation = stage.stage.conv, stage.stage.activation
        out = conv.run(x, activation)
        ctx.stage, ctx.input_shape = stage, tuple(x.shape)
        ctx.saved = activation_saved(out, activation)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        conv, activation = ctx.stage.stage.conv, ctx.stage.stage.activation
        grad = activation_grad(grad, activation, ctx.saved).to(conv.dtype)
        return conv_input_grad(conv, ctx.stage.weight, grad, ctx.input_shape), None


class _TransposeFunction(torch.autograd.Function):
    """An upsampling layer (transposed convolution, folded BatchNorm, activation) with its input gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, stage: "TransposeStage") -> torch.Tensor:
        out = stage.layer(x)
        ctx.stage = stage
        ctx.saved = activation_saved(out, stage.layer.activation)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        layer = ctx.stage.layer
        grad = activation_grad(grad, layer.activation, ctx.saved).to(layer.dtype)
        return F.conv2d(grad, ctx.stage.weight, None, layer.stride, layer.padding, layer.dilation).contiguous(
            memory_format=CHANNELS_LAST), None


class _StripedPairFunction(torch.autograd.Function):
    """The last upsampling layer (ReLU) and the output convolution (reflect padding, an activation after it),
    forward and backward in stripes of rows: the full-resolution tensor between them is never held.

    Forward keeps the upsampling layer's ReLU mask (bits, written stripe by stripe) and the output; backward
    computes, per stripe of the upsampling layer's input rows, the rows of the padded output convolution's
    input gradient they need, folds the reflect padding, masks, and applies the upsampling layer's adjoint.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, pair: "StripedEnd") -> torch.Tensor:
        layer, conv, activation = pair.transpose, pair.conv, pair.activation
        batch, _, height, width = x.shape
        mid_h, mid_w = 2 * height, 2 * width
        bits = None
        out_h, out_w = conv.output_size(mid_h, mid_w)
        out = torch.empty((batch, conv.out_channels, out_h, out_w), dtype=conv.dtype, memory_format=CHANNELS_LAST)
        rows = pair.rows(conv.in_channels * mid_w * conv.dtype.itemsize)
        for n in range(batch):
            sample = x[n:n + 1].to(layer.dtype)

            def middle(low: int, high: int, sample=sample, n=n) -> torch.Tensor:
                nonlocal bits
                block = layer.output_rows(sample, low, high)
                mask = relu_mask(block)
                if bits is None:
                    bits = mask.new_empty((batch, mid_h, mask.shape[2]))
                bits[n:n + 1, low:high] = mask
                return block.to(conv.dtype)

            for first in range(0, out_h, rows):
                last = min(out_h, first + rows)
                out[n:n + 1, :, first:last].copy_(conv.output_rows(middle, mid_h, first, last, activation))
        ctx.pair, ctx.bits, ctx.input_shape = pair, bits, tuple(x.shape)
        ctx.saved = activation_saved(out, activation)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pair = ctx.pair
        layer, conv = pair.transpose, pair.conv
        batch, _, height, width = ctx.input_shape
        mid_h, mid_w = 2 * height, 2 * width
        grad = activation_grad(grad, pair.activation, ctx.saved).to(conv.dtype)
        weight_c, weight_t = pair.weight_c, pair.weight_t
        kernel = conv.kernel_size[0]
        pad_l, pad_r, pad_t, pad_b = conv.explicit_padding or (0, 0, 0, 0)
        out_h = grad.shape[2]

        def padded_rows(n: int, p0: int, p1: int) -> torch.Tensor:
            """Rows [p0, p1) of the gradient of the padded middle, its columns folded back."""
            s0, s1 = max(0, p0 - kernel + 1), min(out_h, p1)
            if s1 <= s0:
                return grad.new_zeros((1, conv.in_channels, p1 - p0, mid_w))
            full = F.conv_transpose2d(grad[n:n + 1, :, s0:s1], weight_c)
            block = full[:, :, p0 - s0:p1 - s0]
            if block.shape[2] < p1 - p0:  # rows past the last input row get nothing
                block = F.pad(block, (0, 0, 0, p1 - p0 - block.shape[2]))
            if pad_l or pad_r:
                block = pad_adjoint(block, (1, conv.in_channels, p1 - p0, mid_w), (pad_l, pad_r, 0, 0),
                                    conv.padding_mode)
            return block

        def middle_rows(n: int, q0: int, q1: int) -> torch.Tensor:
            """Rows [q0, q1) of the gradient of the middle (the upsampling layer's output), masked."""
            rows = padded_rows(n, q0 + pad_t, q1 + pad_t).contiguous(memory_format=CHANNELS_LAST)
            if conv.explicit_padding is not None and conv.padding_mode == "reflect":
                for q in range(q0, q1):
                    if 1 <= q <= pad_t:  # padded row pad_t - q is a reflection of row q
                        rows[:, :, q - q0] += padded_rows(n, pad_t - q, pad_t - q + 1)[:, :, 0]
                    if mid_h - 1 - pad_b <= q <= mid_h - 2:
                        p = 2 * mid_h - 2 - q + pad_t
                        rows[:, :, q - q0] += padded_rows(n, p, p + 1)[:, :, 0]
            return apply_mask(rows, ctx.bits[n:n + 1, q0:q1])

        grad_x = torch.empty(ctx.input_shape, dtype=layer.dtype, memory_format=CHANNELS_LAST)
        rows = max(1, pair.rows(4 * conv.in_channels * mid_w * grad.element_size()) // 2)
        for n in range(batch):
            for r0 in range(0, height, rows):
                r1 = min(height, r0 + rows)
                q0, q1 = max(0, 2 * r0 - 1), min(mid_h, 2 * r1 + 1)
                block = middle_rows(n, q0, q1)
                block = F.pad(block, (0, 0, q0 - (2 * r0 - 1), (2 * r1 + 1) - q1))
                grad_x[n:n + 1, :, r0:r1] = F.conv2d(block, weight_t, None, 2, (0, 1))
        return grad_x, None


class StripedEnd:
    """The autograd stage of a striped pair: an upsampling layer with ReLU, then a stride-1 convolution."""

    def __init__(self, pair: StripedPair) -> None:
        self.transpose: PackedConvTranspose = pair.first
        self.conv: PackedConv = pair.second.conv
        self.activation = pair.second.activation
        # The plain weights of the backward's adjoint convolutions, laid out once.
        self.weight_c = plain_weight(self.conv).to(self.conv.dtype)
        self.weight_t = transpose_weight(self.transpose).to(self.conv.dtype)

    @staticmethod
    def rows(row_bytes: int) -> int:
        """Rows per stripe for rows of ``row_bytes`` (the inference forward's stripe size)."""
        return max(8, fast_layers.STRIPE_BYTES // max(1, row_bytes))

    def __call__(self, x) -> torch.Tensor:
        if isinstance(x, tuple):
            x = x[0]
        return _StripedPairFunction.apply(x, self)


class ResidualStage:
    """A residual block whose sum is a new tensor: under autograd an in-place add could overwrite an
    output that a layer's backward keeps (a float64 ReLU keeps its result)."""

    def __init__(self, block: ResidualBlock) -> None:
        self.block = block

    def __call__(self, x) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        x = as_branches(x)
        y = self.block.second(self.block.first(x))
        return tuple(b if a is None else (a if b is None else a + b) for a, b in zip(x, y))


class TransposeStage:
    """The autograd stage of an upsampling layer."""

    def __init__(self, layer: PackedConvTranspose) -> None:
        self.layer = layer
        self.weight = transpose_weight(layer).to(layer.dtype)  # the backward's, laid out once

    def __call__(self, x) -> torch.Tensor:
        return _TransposeFunction.apply(x, self)


class ConvAutogradStage:
    """The autograd stage of a oneDNN convolution (with its explicit padding and activation)."""

    def __init__(self, stage: ConvStage) -> None:
        self.stage = stage
        self.weight = plain_weight(stage.conv).to(stage.conv.dtype)  # the backward's, laid out once

    def __call__(self, x) -> torch.Tensor:
        if isinstance(x, tuple):
            x = x[0]
        return _ConvFunction.apply(x, self)


def _check_ffc(ffc: FastFFC, where: str) -> None:
    """FFC layers run under plain autograd: their convolutions must be Winograd (float32) or ATen (float64)."""
    named = [(name, getattr(ffc, name)) for name in ("l2l", "g2l", "l2g")]
    named += [(f"merged[{i}]", conv) for i, conv in enumerate(ffc.merged or ())]
    for name, conv in named:
        if conv is not None and conv.algorithm == "onednn":
            raise UnsupportedModelError(
                f"refine on the cpu backend needs the Winograd 3x3 convolutions (float32 with AVX2 or AVX-512) "
                f"or float64; {where}.{name} runs on oneDNN here")


def _is_striped_end(stage: Any) -> bool:
    return (isinstance(stage, StripedPair) and isinstance(stage.first, PackedConvTranspose)
            and stage.first.phases is not None and stage.first.activation == "relu"
            and isinstance(stage.second, ConvStage) and stage.second.conv.stride == [1, 1]
            and stage.second.conv.conv_padding == [0, 0] and stage.second.conv.dilation == [1, 1]
            and stage.second.conv.kernel_size[0] == stage.second.conv.kernel_size[1]
            and stage.second.conv.padding_mode in ("reflect", "zeros"))


def rear_stage(stage: Any, where: str) -> List[Any]:
    """The autograd stages computing ``stage``."""
    if isinstance(stage, ResidualBlock):
        _check_ffc(stage.first, where + ".first")
        _check_ffc(stage.second, where + ".second")
        # A ResidualConcat's join runs as its own stage here.
        return [ResidualStage(stage)] + ([concat_branches] if isinstance(stage, ResidualConcat) else [])
    if isinstance(stage, Layer):
        _check_ffc(stage.ffc, where)
        return [stage]
    if stage is concat_branches or isinstance(stage, (ActivationStage, PadStage)):
        return [stage]
    if isinstance(stage, PackedConvTranspose):
        return [TransposeStage(stage)]
    if isinstance(stage, ConvStage):
        return [ConvAutogradStage(stage)]
    if isinstance(stage, StripedPair):
        if _is_striped_end(stage):
            return [StripedEnd(stage)]
        return rear_stage(stage.first, where) + rear_stage(stage.second_stage, where)
    raise UnsupportedModelError(f"{where}: {type(stage).__name__} has no backward for refinement")


class CpuRefineModel:
    """A cpu-backend ``FastGenerator`` split at its first residual block for ``lama_fast.refine``.

    ``front(x)`` runs the layers before the first residual block (no gradient) and
    returns the (local, global) features as new tensors; ``rear(z1, z2)`` runs the
    rest under autograd with the backward kernels (see the module's docstring).
    """

    def __init__(self, generator: FastGenerator) -> None:
        if not isinstance(generator, FastGenerator):
            raise TypeError(f"CpuRefineModel takes the cpu backend's FastGenerator, got {type(generator).__name__}")
        if generator.compute_dtype not in REFINE_DTYPES:
            raise ValueError(f"refine on the cpu backend runs in float32 or float64, this model computes in "
                             f"{generator.compute_dtype}")
        first = next((i for i, s in enumerate(generator.stages) if isinstance(s, ResidualBlock)), None)
        if first is None:
            raise UnsupportedModelError("refine needs a generator with residual blocks; this one has none")
        self.generator = generator
        self.dtype = generator.compute_dtype
        self.device = torch.device("cpu")
        self.front_stages = generator.stages[:first]
        self.rear_stages: List[Any] = []
        lean_allocator()
        for i, stage in enumerate(generator.stages[first:], start=first):
            self.rear_stages += rear_stage(stage, f"stage {i}")

    def front(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The features (z1, z2) the residual blocks take, as new channels-last tensors."""
        previous = WORKSPACE.active
        # It runs once per scale: no work buffer is worth keeping for the whole refinement.
        WORKSPACE.active = None
        try:
            with torch.no_grad():
                out = x.to(self.dtype).contiguous(memory_format=CHANNELS_LAST)
                for stage in self.front_stages:
                    out = stage(out)
        finally:
            WORKSPACE.active = previous
        if not isinstance(out, tuple) or out[0] is None or out[1] is None:
            raise UnsupportedModelError("the layers before the first residual block must give (local, global) "
                                        "features")
        return tuple(z.contiguous(memory_format=CHANNELS_LAST).clone(memory_format=CHANNELS_LAST) for z in out)

    def rear(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The prediction (N, 3, H, W) from the features, differentiable with respect to them."""
        previous = WORKSPACE.active
        WORKSPACE.active = None  # autograd keeps no work buffer: every layer writes a new tensor
        try:
            out: Any = (z1, z2)
            for stage in self.rear_stages:
                out = stage(out)
        finally:
            WORKSPACE.active = previous
        if isinstance(out, tuple):
            out = out[0]
        return out

    def close(self) -> None:
        """Drop the transposed Winograd weights kept for the backward."""
        from ..ops.winograd import clear_transposed_weights

        clear_transposed_weights()
