"""Inference-only building blocks of the fast CPU generator.

Every block holds weights with BatchNorm already folded in, laid out once
(oneDNN's blocked format for float32 and bfloat16), and works on
channels-last activations.  float64 runs the same blocks through plain
PyTorch convolutions, which makes the rewrite itself checkable to 1e-12.
"""

from __future__ import annotations

import math
import threading
from typing import Dict, Hashable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..ops.spectral import spectral_transform
from ..ops.winograd import conv3x3_winograd, winograd_available, winograd_isa, winograd_weight

CHANNELS_LAST = torch.channels_last
# Layers whose (padded) input is larger than this run in horizontal stripes, so that
# neither a padded copy of the whole input nor a whole intermediate is ever held:
# at 2048x2048 the full-resolution layers would otherwise hold 1 GB copies.
STRIPE_ABOVE_BYTES = 160 << 20
STRIPE_BYTES = 32 << 20
ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
ACTIVATIONS = (None, "relu", "sigmoid", "tanh")
CONV_ALGORITHMS = ("auto", "direct", "winograd")


def winograd_reason() -> Optional[str]:
    """None when the Winograd 3x3 convolution is usable and faster than oneDNN's direct one here."""
    why = winograd_available()
    if why is not None:
        return why
    if winograd_isa() == "generic":
        # Measured: without AVX2 or AVX-512 kernels it runs at ~0.8x oneDNN's direct convolution.
        return "this CPU has neither AVX-512 nor AVX2, where the Winograd kernels are slower than oneDNN"
    return None


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


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a channels-last contiguous tensor (no copy when it already is one)."""
    return x.contiguous(memory_format=CHANNELS_LAST)


def _pair(value) -> Tuple[int, int]:
    if isinstance(value, int):
        return value, value
    return int(value[0]), int(value[1])


def activate(x: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    if activation == "relu":
        return x.relu_()
    if activation == "sigmoid":
        return x.sigmoid_()
    if activation == "tanh":
        return x.tanh_()
    return x


class PackedConv:
    """A 2-D convolution with a folded bias, an optional added tensor and activation.

    ``conv(x, other, activation)`` computes ``act(conv(pad(x)) + bias + other)``.
    Reflect/replicate/circular padding is done explicitly once (the caller may
    share one padded input between several convolutions through ``pad``);
    zero padding is left to the convolution itself.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor],
        dtype: torch.dtype,
        stride=1,
        padding=0,
        dilation=1,
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
        pad_h, pad_w = _pair(padding)
        self.padding_mode = padding_mode
        explicit = padding_mode != "zeros" and (pad_h or pad_w)
        self.explicit_padding = (pad_w, pad_w, pad_h, pad_h) if explicit else None
        self.conv_padding = [0, 0] if padding_mode != "zeros" else [pad_h, pad_w]
        self.weight = weight.detach().to(dtype).contiguous()
        # oneDNN takes a float32 bias for bfloat16 convolutions as well.
        self.bias = None if bias is None else bias.detach().to(dtype).contiguous()
        self.onednn = dtype in ONEDNN_DTYPES and torch.backends.mkldnn.is_available()
        self.packed = None
        self.winograd = None
        self.winograd_reflect = 0
        winograd_fits = (dtype == torch.float32 and self.kernel_size == (3, 3) and self.stride == [1, 1]
                         and self.dilation == [1, 1] and self.conv_padding == [0, 0])
        if algorithm == "winograd" and not winograd_fits:
            raise ValueError("the Winograd convolution needs float32, a 3x3 kernel, stride 1, dilation 1 and "
                             "explicit (non-zero) padding")
        if algorithm == "winograd" or (algorithm == "auto" and winograd_fits and winograd_reason() is None):
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


# For LaMa's upsampling layers (ConvTranspose2d, 3x3, stride 2, padding 1, output
# padding 1) the output pixel (2m + a, 2n + b) sees input row m when a = 0 (kernel
# row 1), rows m and m + 1 when a = 1 (kernel rows 2 and 0); the same for columns.
# PHASE_TAPS[a] lists those kernel indices for input offsets 0, 1.
PHASE_TAPS = ((1,), (2, 0))


def phase_weights(weight: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """The (Cout, Cin, 1 + a, 1 + b) convolution weight of output phase (a, b) of a LaMa upsampling layer.

    ``weight`` is the transposed convolution's (Cin, Cout, 3, 3) weight.
    """
    rows, cols = PHASE_TAPS[a], PHASE_TAPS[b]
    return torch.stack([torch.stack([weight[:, :, i, j].t() for j in cols], dim=-1) for i in rows], dim=-2)


class PackedConvTranspose:
    """A transposed convolution with folded BatchNorm and an optional ReLU.

    LaMa's stride-2 3x3 upsampling layers run as four ordinary convolutions, one
    per output phase, with 1x1, 1x2, 2x1 and 2x2 kernels over the input
    zero-padded by one row and column (9 taps in all, as many as the transposed
    convolution has), each with prepacked oneDNN weights, then interleaved into
    the output.  Other geometries use ``conv_transpose2d``.
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], dtype: torch.dtype,
                 stride, padding, output_padding, dilation, activation: Optional[str]) -> None:
        self.dtype = dtype
        self.weight = weight.detach().to(dtype).contiguous()
        self.bias = None if bias is None else bias.detach().to(dtype).contiguous()
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.output_padding = _pair(output_padding)
        self.dilation = _pair(dilation)
        self.activation = activation
        self.out_channels = int(weight.shape[1])
        self.phases = None
        lama_geometry = (tuple(weight.shape[2:]) == (3, 3) and self.stride == (2, 2) and self.padding == (1, 1)
                         and self.output_padding == (1, 1) and self.dilation == (1, 1))
        if lama_geometry:
            exact = weight.detach().double()
            exact_bias = None if bias is None else bias.detach().double()
            self.phases = [[PackedConv(phase_weights(exact, a, b), exact_bias, dtype) for b in range(2)]
                           for a in range(2)]
            self.weight = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.phases is not None:
            return self._by_phases(to_channels_last(x.to(self.dtype)))
        out = F.conv_transpose2d(
            to_channels_last(x), self.weight, self.bias, self.stride, self.padding, self.output_padding,
            1, self.dilation,
        )
        return to_channels_last(activate(out, self.activation))

    def _by_phases(self, x: torch.Tensor) -> torch.Tensor:
        """The four phase convolutions, a stripe of input rows at a time."""
        batch, _, height, width = x.shape
        channels = self.out_channels
        shape = (batch, channels, 2 * height, 2 * width)
        out = WORKSPACE.buffer(("out", id(self)), shape, self.dtype)
        if out is None:
            out = torch.empty(shape, dtype=self.dtype, memory_format=CHANNELS_LAST)
        row_bytes = 4 * channels * width * out.element_size()
        rows = height if out.numel() * out.element_size() <= STRIPE_ABOVE_BYTES else max(
            8, STRIPE_BYTES // max(1, row_bytes))
        for n in range(batch):
            for first in range(0, height, rows):
                last = min(height, first + rows)
                self._phase_rows(x[n:n + 1], first, last, out[n:n + 1, :, 2 * first:2 * last])
        return out

    def _phase_rows(self, x: torch.Tensor, first: int, last: int, target: torch.Tensor) -> None:
        """Output rows [2 first, 2 last) of one sample (the phases of input rows [first, last)) into ``target``."""
        height, width = x.shape[-2:]
        count = last - first
        # Rows first..last need one more input row below (zeros past the end).
        high = min(height, last + 1)
        chunk = to_channels_last(F.pad(x[:, :, first:high], (0, 1, 0, last + 1 - high)))
        # (o, m, a, j, b) -> output (o, 2m + a, 2j + b)
        grid = target[0].unflatten(1, (count, 2)).unflatten(3, (width, 2))
        for a in range(2):
            for b in range(2):
                phase = self.phases[a][b](chunk, None, self.activation)[0]
                grid[:, :, a, :, b].copy_(phase[:, :count, :width])
                del phase

    def output_rows(self, x: torch.Tensor, low: int, high: int) -> torch.Tensor:
        """Output rows [low, high) of one sample ``x`` (LaMa's upsampling geometry only)."""
        first, last = low // 2, (high + 1) // 2
        block = torch.empty((1, self.out_channels, 2 * (last - first), 2 * x.shape[-1]), dtype=self.dtype,
                            memory_format=CHANNELS_LAST)
        self._phase_rows(x, first, last, block)
        return block[:, :, low - 2 * first:high - 2 * first]


class FusedSpectral:
    """The spectral transform (1x1 conv, Fourier unit, residual, 1x1 conv) as one fused op."""

    def __init__(self, w1, b1, w_freq, b_freq, w2, fft_norm: str, dtype: torch.dtype, downsample: bool) -> None:
        self.w1 = w1.to(dtype).contiguous()
        self.b1 = b1.to(dtype).contiguous()
        self.w_freq = w_freq.to(dtype).contiguous()
        self.b_freq = b_freq.to(dtype).contiguous()
        self.w2 = w2.to(dtype).contiguous()
        self.fft_norm = fft_norm
        self.downsample = downsample
        self.out_channels = int(w2.shape[0])

    def __call__(self, x: torch.Tensor, bias: Optional[torch.Tensor], other: Optional[torch.Tensor],
                 relu: bool) -> torch.Tensor:
        if self.downsample:
            x = F.avg_pool2d(x, kernel_size=2, stride=2)
        return spectral_transform(x, self.w1, self.b1, self.w_freq, self.b_freq, self.w2, bias, other, relu,
                                  self.fft_norm)


Branches = Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]


class FastFFC:
    """One FFC layer with its BatchNorms and activations: (local, global) in, (local, global) out.

    local  = act_l(conv_l2l(x_l) + conv_g2l(x_g) + bias_l)      (BN_l folded)
    global = act_g(conv_l2g(x_l) + spectral(x_g) + bias_g)      (BN_g folded)

    When the layer has no global input, the two convolutions of the local input
    are merged into one with the output channels of both.
    """

    def __init__(self, l2l: Optional[PackedConv], g2l: Optional[PackedConv], l2g: Optional[PackedConv],
                 spectral: Optional[FusedSpectral], merged: Optional[PackedConv],
                 bias_g: Optional[torch.Tensor], act_l: Optional[str], act_g: Optional[str], split: int) -> None:
        self.l2l, self.g2l, self.l2g, self.spectral, self.merged = l2l, g2l, l2g, spectral, merged
        # The global output's folded BatchNorm shift when no l2g convolution carries it.
        self.bias_g = bias_g
        self.act_l, self.act_g = act_l, act_g
        self.split = split

    def __call__(self, x: Branches) -> Branches:
        x_l, x_g = x
        if self.merged is not None:
            both = self.merged.run(x_l, self.act_l)
            return both[:, : self.split], both[:, self.split:]
        if self.l2l is not None and self.g2l is None and self.l2g is None and self.spectral is None:
            return self.l2l.run(x_l, self.act_l), None
        local = glob = None
        # The local input's padded copy, shared by l2l and l2g (made once, and not at
        # all when both read their padding in place).
        padded_l = self.l2l.pad(x_l, "local") if self.l2l is not None else None
        if self.l2g is not None and (padded_l is None or self.l2l.explicit_padding != self.l2g.explicit_padding):
            padded_for_l2g = self.l2g.pad(x_l, "local-global")
        else:
            padded_for_l2g = padded_l
        padded_g = self.g2l.pad(x_g, "global") if self.g2l is not None else None
        # Local output: the second convolution adds the first's result and applies the activation.
        if self.l2l is not None and self.g2l is not None:
            local = self.g2l(padded_g, self.l2l(padded_l), self.act_l)
        elif self.l2l is not None:
            local = self.l2l(padded_l, None, self.act_l)
        elif self.g2l is not None:
            local = self.g2l(padded_g, None, self.act_l)
        # Global output: the spectral op adds the local-to-global convolution's result.
        if self.spectral is not None:
            other = self.l2g(padded_for_l2g) if self.l2g is not None else None
            bias = None if self.l2g is not None else self.bias_g
            glob = self.spectral(x_g, bias, other, self.act_g == "relu")
        elif self.l2g is not None:
            glob = self.l2g(padded_for_l2g, None, self.act_g)
        return local, glob


def add_branches(a: Branches, b: Branches) -> Branches:
    """Element-wise sum of two (local, global) pairs, in place into ``b``'s tensors."""
    out = []
    for x, y in zip(a, b):
        if x is None:
            out.append(y)
        elif y is None:
            out.append(x)
        else:
            out.append(y.add_(x) if y.is_contiguous(memory_format=CHANNELS_LAST) else y + x)
    return tuple(out)


def concat_branches(x: Branches) -> torch.Tensor:
    """Join (local, global) along channels, local first."""
    x_l, x_g = x
    if x_g is None:
        return x_l
    if x_l is None:
        return x_g
    return to_channels_last(torch.cat((x_l, x_g), dim=1))


def chain(stages: Sequence, x):
    """Run ``x`` through callables in order."""
    for stage in stages:
        x = stage(x)
    return x
