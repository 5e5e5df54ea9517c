"""The fast CPU generator's convolution, its work buffers and its stripe sizes.

Every convolution holds weights with BatchNorm already folded in, laid out once
(oneDNN's blocked format for float32 and bfloat16, or the Winograd domain), and
works on channels-last activations.  float64 runs the same blocks through plain
PyTorch convolutions, which makes the rewrite itself checkable to 1e-12.  The
upsampling layers are in ``transpose``, the FFC layer in ``ffc``, the striped
layer pairs in ``stripes``.
"""

from __future__ import annotations

import math
import threading
from typing import Dict, Hashable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..ops.winograd import conv3x3_winograd, winograd_reasons, winograd_weight
from ..rewrite.run import CHANNELS_LAST, activate, to_channels_last

# Layers whose (padded) input is larger than this run in horizontal stripes, so that
# neither a padded copy of the whole input nor a whole intermediate is ever held:
# at 2048x2048 the full-resolution layers would otherwise hold 1 GB copies.
STRIPE_ABOVE_BYTES = 160 << 20
STRIPE_BYTES = 32 << 20
ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
CONV_ALGORITHMS = ("auto", "direct", "winograd")


class Workspace(threading.local):
    """Buffers kept between calls, one set per thread.

    Memory touched for the first time costs page faults (about 18 ms per
    100 MB measured here), and glibc maps every allocation above 32 MB fresh,
    so each padded copy or encoder/decoder output of a 512x512 image would pay
    that on every call.  ``FastGenerator`` activates a workspace around its
    forward; buffers up to ``STRIPE_ABOVE_BYTES`` are then reused (larger
    layers run in stripes and keep nothing).
    """

    def __init__(self) -> None:
        self.active: Optional[Dict[Hashable, torch.Tensor]] = None

    def buffer(self, key: Hashable, shape: Sequence[int], dtype: torch.dtype) -> Optional[torch.Tensor]:
        """A reusable channels-last buffer for ``key`` (None when inactive or too large)."""
        store = self.active
        if store is None:
            return None
        shape = tuple(int(s) for s in shape)
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if nbytes > STRIPE_ABOVE_BYTES:
            return None
        cached = store.get(key)
        if cached is None or tuple(cached.shape) != shape or cached.dtype != dtype:
            cached = torch.empty(shape, dtype=dtype, memory_format=CHANNELS_LAST)
            store[key] = cached
        return cached


WORKSPACE = Workspace()


def reflect_pad_into(out: torch.Tensor, x: torch.Tensor, padding: Tuple[int, int, int, int]) -> torch.Tensor:
    """``F.pad(x, padding, mode="reflect")`` written into ``out``."""
    left, right, top, bottom = padding
    height, width = x.shape[-2:]
    rows = out[:, :, top:top + height]
    rows[..., left:left + width].copy_(x)
    if left:
        rows[..., :left].copy_(x[..., 1:left + 1].flip(-1))
    if right:
        rows[..., left + width:].copy_(x[..., width - 1 - right:width - 1].flip(-1))
    if top:
        out[:, :, :top].copy_(out[:, :, top + 1:2 * top + 1].flip(-2))
    if bottom:
        out[:, :, top + height:].copy_(out[:, :, top + height - 1 - bottom:top + height - 1].flip(-2))
    return out


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def winograd_fits(dtype: torch.dtype, kernel_size, stride, dilation, conv_padding) -> bool:
    """Whether the Winograd kernels compute this convolution: float32, 3x3, stride 1, dilation 1,
    no zero padding of its own."""
    return (dtype == torch.float32 and tuple(kernel_size) == (3, 3) and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1) and tuple(conv_padding) == (0, 0))


def chooses_winograd(algorithm: str, fits: bool) -> bool:
    """Whether a convolution built with ``algorithm`` runs as Winograd ("auto": where it fits and the
    Winograd kernels are usable and faster than oneDNN here)."""
    return algorithm == "winograd" or (algorithm == "auto" and fits and not winograd_reasons())


class PackedConv:
    """A 2-D convolution with a folded bias, an optional added tensor and activation.

    ``conv(x, other, activation)`` computes ``act(conv(pad(x)) + bias + other)``.
    The ``explicit_padding`` (left, right, top, bottom) in ``padding_mode`` is done
    once (the caller may share one padded input between several convolutions
    through ``pad``); ``conv_padding``, zeros, is left to the convolution itself.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        dtype: torch.dtype,
        stride=1,
        conv_padding=0,
        dilation=1,
        explicit_padding: Optional[Tuple[int, int, int, int]] = None,
        padding_mode: str = "zeros",
        algorithm: str = "direct",
    ) -> None:
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"unknown padding mode {padding_mode!r}")
        if algorithm not in CONV_ALGORITHMS:
            raise ValueError(f"conv algorithm must be one of {CONV_ALGORITHMS}, got {algorithm!r}")
        self.dtype = dtype
        self.out_channels, self.in_channels = int(weight.shape[0]), int(weight.shape[1])
        self.kernel_size = tuple(int(k) for k in weight.shape[2:])
        self.stride = list(_pair(stride))
        self.dilation = list(_pair(dilation))
        self.padding_mode = padding_mode
        self.explicit_padding = None if explicit_padding is None else tuple(int(p) for p in explicit_padding)
        self.conv_padding = list(_pair(conv_padding))
        self.weight = weight.detach().to(dtype).contiguous()
        # oneDNN takes a float32 bias for bfloat16 convolutions as well.
        self.bias = None if bias is None else bias.detach().to(dtype).contiguous()
        self.onednn = dtype in ONEDNN_DTYPES and torch.backends.mkldnn.is_available()
        self.packed = None
        self.winograd = None
        self.winograd_reflect = 0
        fits = winograd_fits(dtype, self.kernel_size, self.stride, self.dilation, self.conv_padding)
        if algorithm == "winograd" and not fits:
            raise ValueError("the Winograd convolution needs float32, a 3x3 kernel, stride 1, dilation 1 and "
                             "explicit (non-zero) padding")
        if chooses_winograd(algorithm, fits):
            self.winograd = winograd_weight(self.weight)
            self.bias = None if self.bias is None else self.bias.float()
            # The Winograd kernels read a one-pixel reflect padding in place.
            if self.padding_mode == "reflect" and self.explicit_padding == (1, 1, 1, 1):
                self.explicit_padding = None
                self.winograd_reflect = 1
            self.onednn = False
            self.weight = None
        if self.onednn:
            self.packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.to_mkldnn(), self.conv_padding, self.stride, self.dilation, 1
            )
            self.weight = None  # the packed copy is the only one used

    def pad(self, x: torch.Tensor, role: Hashable = "x") -> torch.Tensor:
        """The convolution's explicit padding of ``x`` (channels last, in its dtype), or ``x`` itself.

        The padded copy goes into the workspace buffer of ``role`` when one is active.
        """
        x = x.to(self.dtype)
        if self.explicit_padding is None:
            return to_channels_last(x)
        left, right, top, bottom = self.explicit_padding
        if self.padding_mode == "reflect":
            shape = (*x.shape[:2], x.shape[2] + top + bottom, x.shape[3] + left + right)
            target = WORKSPACE.buffer(("pad", role), shape, self.dtype)
            if target is not None:
                return reflect_pad_into(target, x, self.explicit_padding)
        return to_channels_last(F.pad(x, self.explicit_padding, mode=self.padding_mode))

    def wants_stripes(self, x: torch.Tensor) -> bool:
        """Whether ``run`` on ``x`` goes stripe by stripe (explicitly padded, large inputs)."""
        stripable = self.explicit_padding is not None or (self.conv_padding == [0, 0] and self.winograd is None)
        return stripable and x.numel() * x.element_size() > STRIPE_ABOVE_BYTES

    def run(self, x: torch.Tensor, activation: Optional[str] = None) -> torch.Tensor:
        """``act(conv(pad(x)) + bias)``, in stripes of output rows when ``x`` is large.

        With an active workspace the output goes into this convolution's own buffer
        there, so it stays valid until this convolution runs again.
        """
        if not self.wants_stripes(x):
            padded = self.pad(x)
            if self.onednn:
                shape = self.output_shape(padded.shape)
                target = WORKSPACE.buffer(("out", id(self)), shape, self.dtype)
                if target is not None and shape[0] == 1:
                    self.into(target, padded, activation)
                    return target
            return self(padded, None, activation)
        x = x.to(self.dtype)
        batch, channels, height, width = x.shape
        pad_l, pad_r, pad_t, pad_b = self.explicit_padding or (0, 0, 0, 0)
        mode = self.padding_mode if self.explicit_padding is not None else "constant"
        reach_h = (self.kernel_size[0] - 1) * self.dilation[0] + 1
        reach_w = (self.kernel_size[1] - 1) * self.dilation[1] + 1
        step_h, step_w = self.stride
        out_h = (height + pad_t + pad_b - reach_h) // step_h + 1
        out_w = (width + pad_l + pad_r - reach_w) // step_w + 1
        out = torch.empty((batch, self.out_channels, out_h, out_w), dtype=self.dtype, memory_format=CHANNELS_LAST)
        row_bytes = channels * (width + pad_l + pad_r) * x.element_size() * step_h
        rows = max(8, STRIPE_BYTES // max(1, row_bytes))
        for n in range(batch):
            for first in range(0, out_h, rows):
                last = min(out_h, first + rows)
                start = first * step_h - pad_t
                stop = (last - 1) * step_h + reach_h - pad_t
                low, high = max(0, start), min(height, stop)
                chunk = F.pad(x[n:n + 1, :, low:high], (pad_l, pad_r, low - start, stop - high), mode=mode)
                self.into(out[n:n + 1, :, first:last], to_channels_last(chunk), activation)
        return out

    def output_rows(self, source, height: int, first: int, last: int, activation: Optional[str]) -> torch.Tensor:
        """Output rows [first, last) of one sample, reading input rows through ``source(low, high)``.

        ``source`` gives rows [low, high) of an input ``height`` rows tall (one sample,
        already in this convolution's dtype); the padding at the image's top and bottom
        is made here, so the rows may come from another layer computed on demand.
        """
        pad_l, pad_r, pad_t, _ = self.explicit_padding or (0, 0, 0, 0)
        mode = self.padding_mode if self.explicit_padding is not None else "constant"
        reach_h = (self.kernel_size[0] - 1) * self.dilation[0] + 1
        start = first * self.stride[0] - pad_t
        stop = (last - 1) * self.stride[0] + reach_h - pad_t
        low, high = max(0, start), min(height, stop)
        chunk = F.pad(source(low, high), (pad_l, pad_r, low - start, stop - high), mode=mode)
        return self(to_channels_last(chunk), None, activation)

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """Output (H, W) for an unpadded input of ``height`` x ``width``."""
        pad_l, pad_r, pad_t, pad_b = self.explicit_padding or (0, 0, 0, 0)
        _, _, out_h, out_w = self.output_shape((1, self.in_channels, height + pad_t + pad_b, width + pad_l + pad_r))
        return out_h, out_w

    def output_shape(self, padded_shape: Sequence[int]) -> Tuple[int, int, int, int]:
        """(N, Cout, H, W) of the convolution of an input of ``padded_shape`` (padding already applied)."""
        sizes = []
        for axis in range(2):
            reach = (self.kernel_size[axis] - 1) * self.dilation[axis] + 1
            size = padded_shape[2 + axis] + 2 * self.conv_padding[axis]
            sizes.append((size - reach) // self.stride[axis] + 1)
        return int(padded_shape[0]), self.out_channels, sizes[0], sizes[1]

    @property
    def algorithm(self) -> str:
        """"winograd", "onednn" (direct, prepacked) or "aten" (plain conv2d, float64)."""
        return "winograd" if self.winograd is not None else ("onednn" if self.onednn else "aten")

    def into(self, target: torch.Tensor, padded: torch.Tensor, activation: Optional[str]) -> None:
        """Write ``act(conv(padded) + bias)`` into ``target``, a channels-last view of one sample."""
        if self.onednn:
            # oneDNN fuses only ReLU after the in-place add; other activations follow in place.
            fused = activation if activation == "relu" else None
            target.zero_()
            torch.ops.mkldnn._convolution_pointwise_.binary(
                target, padded, self.packed, self.bias, self.conv_padding, self.stride, self.dilation, 1,
                "add", 1.0, fused, [], "",
            )
            if activation != fused:
                activate(target, activation)
        else:
            target.copy_(self(padded, None, activation))

    def __call__(
        self, padded: torch.Tensor, other: Optional[torch.Tensor] = None, activation: Optional[str] = None
    ) -> torch.Tensor:
        if self.winograd is not None:
            fused = activation == "relu"
            out = conv3x3_winograd(padded, self.winograd, self.bias, other, fused, self.winograd_reflect)
            return out if fused else activate(out, activation)
        if self.onednn:
            padded = to_channels_last(padded)
            if other is None:
                return torch.ops.mkldnn._convolution_pointwise(
                    padded, self.packed, self.bias, self.conv_padding, self.stride, self.dilation, 1,
                    activation or "none", [], "",
                )
            return torch.ops.mkldnn._convolution_pointwise.binary(
                padded, to_channels_last(other), self.packed, self.bias, self.conv_padding, self.stride,
                self.dilation, 1, "add", 1.0, activation or "none", [], "",
            )
        out = F.conv2d(padded, self.weight, self.bias, self.stride, self.conv_padding, self.dilation)
        if other is not None:
            out = out.add_(other)
        return to_channels_last(activate(out, activation))


class ConvStage:
    """A convolution stage: ``act(conv(pad(x)) + bias)`` (see ``PackedConv.run``)."""

    def __init__(self, conv: PackedConv, activation: Optional[str]) -> None:
        self.conv, self.activation = conv, activation

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv.run(x, self.activation)
