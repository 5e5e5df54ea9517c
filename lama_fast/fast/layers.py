"""The fast CPU generator's convolution, its work buffers and its stripe sizes.

Every convolution holds weights with BatchNorm already folded in, laid out once
(oneDNN's blocked format for float32 and bfloat16, or plain for the Winograd kernels), and
works on channels-last activations.  float64 runs the same blocks through plain
PyTorch convolutions, which makes the rewrite itself checkable to 1e-12.  The
upsampling layers are in ``transpose``, the FFC layer in ``ffc``, the striped
layer pairs in ``stripes``.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Dict, Hashable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..ops.layout import layout_ops_available, reflect_pad_into
from ..ops.winograd import conv3x3_winograd, winograd_reasons
from ..rewrite.run import CHANNELS_LAST, activate, to_channels_last

# Layers whose (padded) input is larger than this run in horizontal stripes, so that
# neither a padded copy of the whole input nor a whole intermediate is ever held:
# at 2048x2048 the full-resolution layers would otherwise hold 1 GB copies.
STRIPE_ABOVE_BYTES = 160 << 20
STRIPE_BYTES = 32 << 20
ONEDNN_DTYPES = (torch.float32, torch.bfloat16)
CONV_ALGORITHMS = ("auto", "direct", "winograd")


# Pooled buffers are allocated in multiples of this, so that a slightly larger
# request later (a padded copy after an unpadded output) reuses the same one.
POOL_GRANULE = 4 << 20


def _use_count(storage_owner: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(storage_owner.untyped_storage()._cdata)


class Workspace(threading.local):
    """Buffers kept between calls, one pool per thread.

    Memory touched for the first time costs page faults (about 18 ms per
    100 MB measured here), and glibc maps every allocation above 32 MB fresh,
    so each padded copy or encoder/decoder output of a 512x512 image would pay
    that on every call.  ``FastGenerator`` activates a workspace around its
    forward; requests up to ``STRIPE_ABOVE_BYTES`` then come from a pool of
    flat buffers (larger layers run in stripes and keep nothing).

    A pooled buffer is handed out again only when no tensor uses its memory
    any more (its storage's use count is back to the pool's own), so the pool
    holds as many buffers as were ever in use at once -- three at 512x512 --
    rather than one per layer.
    """

    def __init__(self) -> None:
        self.active: Optional[Dict[Hashable, Any]] = None

    def buffer(self, shape: Sequence[int], dtype: torch.dtype) -> Optional[torch.Tensor]:
        """A channels-last tensor of ``shape`` whose memory no other live tensor uses (None when the workspace is
        inactive or the request too large); its contents are undefined."""
        store = self.active
        if store is None:
            return None
        shape = tuple(int(s) for s in shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        nbytes = math.prod(shape) * itemsize
        if nbytes > STRIPE_ABOVE_BYTES:
            return None
        pool: List[torch.Tensor] = store.setdefault("pool", [])
        free = [(i, b) for i, b in enumerate(pool) if _use_count(b) == _FREE_COUNT]
        fitting = [(b.numel(), i) for i, b in free if b.numel() >= nbytes]
        if fitting:
            base = pool[min(fitting)[1]]
        else:
            if free:  # a free buffer too small for this request: replace it rather than keep both
                pool.pop(max(free, key=lambda item: item[1].numel())[0])
            base = torch.empty(-(-nbytes // POOL_GRANULE) * POOL_GRANULE, dtype=torch.uint8)
            pool.append(base)
        batch, channels, height, width = shape
        strides = (height * width * channels, 1, width * channels, channels)
        return torch.empty(0, dtype=dtype).set_(base.untyped_storage(), 0, shape, strides)


# The use count of a pooled buffer's storage that no tensor but the pool uses.
_FREE_COUNT = _use_count(torch.empty(1, dtype=torch.uint8))


WORKSPACE = Workspace()


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
            # Kept plain (Cout, Cin, 3, 3): conv3x3_winograd transforms it on each call into a reused
            # buffer, a quarter of the memory of the transformed weight for ~1 % of the time.
            self.winograd = self.weight
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

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution's explicit padding of ``x`` (channels last, in its dtype), or ``x`` itself.

        The padded copy goes into a workspace buffer when a workspace is active.
        """
        x = to_channels_last(x.to(self.dtype))
        if self.explicit_padding is None:
            return x
        left, right, top, bottom = self.explicit_padding
        # The layout op has no autograd formula: a padding that gradients flow through stays F.pad.
        tracked = torch.is_grad_enabled() and x.requires_grad
        if self.padding_mode == "reflect" and layout_ops_available() and not tracked:
            shape = (*x.shape[:2], x.shape[2] + top + bottom, x.shape[3] + left + right)
            target = WORKSPACE.buffer(shape, self.dtype)
            if target is None:
                target = torch.empty(shape, dtype=self.dtype, memory_format=CHANNELS_LAST)
            return reflect_pad_into(x, target, self.explicit_padding)
        return to_channels_last(F.pad(x, self.explicit_padding, mode=self.padding_mode))

    def wants_stripes(self, x: torch.Tensor) -> bool:
        """Whether ``run`` on ``x`` goes stripe by stripe (explicitly padded, large inputs)."""
        stripable = self.explicit_padding is not None or (self.conv_padding == [0, 0] and self.winograd is None)
        return stripable and x.numel() * x.element_size() > STRIPE_ABOVE_BYTES

    def run(self, x: torch.Tensor, activation: Optional[str] = None) -> torch.Tensor:
        """``act(conv(pad(x)) + bias)``, in stripes of output rows when ``x`` is large.

        With an active workspace the output goes into a pooled buffer there, which is
        not handed out again while the output (or a view of it) lives.
        """
        if not self.wants_stripes(x):
            return self.run_padded(self.pad(x), activation)
        return self._run_stripes(x, activation)

    def run_padded(self, padded: torch.Tensor, activation: Optional[str] = None) -> torch.Tensor:
        """``run`` on an input already padded (``pad``'s result, or a buffer a layer wrote padded)."""
        if self.onednn:
            # Into a pooled buffer: zeroing it (oneDNN's only in-place form accumulates) costs less
            # than the page faults of a new output above glibc's mmap threshold (measured 4 % of a
            # 512x512 forward).
            shape = self.output_shape(padded.shape)
            target = WORKSPACE.buffer(shape, self.dtype)
            if target is not None and shape[0] == 1:
                self.into(target, padded, activation)
                return target
        return self(padded, None, activation)

    def _run_stripes(self, x: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
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
