"""Two layers in a row computed stripe by stripe on large images (the full-resolution ends of the generator)."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import torch

from ..ops.layout import layout_ops_available
from ..rewrite import UnsupportedModelError
from ..rewrite.run import Layer
from . import layers  # its stripe sizes are read at call time (tests and benchmarks change them)
from .layers import ConvStage, PackedConv
from .transpose import PackedConvTranspose


class StripedPair:
    """Two layers in a row run stripe by stripe on large images.

    At 2048x2048 the 64-channel full-resolution tensor between the first two
    layers (and between the last two) takes 1 GB; here only the rows the second
    layer's current stripe needs are computed.  Small images run the two
    layers one after the other as usual.
    """

    def __init__(self, first: Callable, second_stage: Callable, second: ConvStage,
                 first_size: Callable[[int, int], Tuple[int, int]], first_rows: Callable,
                 first_bytes: Callable[[int, int, int], int], wrap_tuple: bool) -> None:
        self.first, self.second_stage, self.second = first, second_stage, second
        self.first_size, self.first_rows, self.first_bytes = first_size, first_rows, first_bytes
        self.wrap_tuple = wrap_tuple

    def writes_padded(self, x: torch.Tensor) -> bool:
        return _writes_padded(self.first, self.second.conv, x)

    def __call__(self, x):
        x_in = x[0] if isinstance(x, tuple) else x
        if isinstance(x, tuple) and x[1] is not None:
            raise UnsupportedModelError("a striped pair of layers takes a local input only")
        conv = self.second.conv
        batch, _, height, width = x_in.shape
        mid_h, mid_w = self.first_size(height, width)
        if self.first_bytes(batch, mid_h, mid_w) <= layers.STRIPE_ABOVE_BYTES:
            if self.writes_padded(x_in):
                # The upsampling layer writes into the interior of the convolution's padded input.
                return self.second.conv.run_padded(self.first.padded_output(x_in, conv.explicit_padding),
                                                   self.second.activation)
            return self.second_stage(self.first(x))
        out_h, out_w = conv.output_size(mid_h, mid_w)
        out = torch.empty((batch, conv.out_channels, out_h, out_w), dtype=conv.dtype,
                          memory_format=torch.channels_last)
        row_bytes = conv.in_channels * mid_w * out.element_size() * conv.stride[0]
        rows = max(8, layers.STRIPE_BYTES // max(1, row_bytes))
        for n in range(batch):
            sample = x_in[n:n + 1]

            def middle(low, high, sample=sample):
                return self.first_rows(sample, height, low, high).to(conv.dtype)

            for first in range(0, out_h, rows):
                last = min(out_h, first + rows)
                out[n:n + 1, :, first:last].copy_(conv.output_rows(middle, mid_h, first, last, self.second.activation))
        return (out, None) if self.wrap_tuple else out


def _writes_padded(first: Any, conv: PackedConv, x: torch.Tensor) -> bool:
    """Whether ``first`` can write its output into the interior of ``conv``'s reflect-padded input."""
    return (isinstance(first, PackedConvTranspose) and first.phases is not None and conv.padding_mode == "reflect"
            and conv.explicit_padding is not None and layout_ops_available()
            and not (torch.is_grad_enabled() and x.requires_grad))


def _single_conv(stage: Any) -> Optional[PackedConv]:
    """The one convolution of an FFC layer that has only a local-to-local branch, else None."""
    if not isinstance(stage, Layer):
        return None
    ffc = stage.ffc
    if ffc.merged is None and ffc.l2l is not None and ffc.g2l is None and ffc.l2g is None and ffc.spectral is None:
        return ffc.l2l
    return None


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def pair_up(stages: List) -> List:
    """``stages`` with the layers around the full-resolution tensors paired (see StripedPair): two
    single-convolution FFC layers in a row, and an upsampling layer followed by a convolution."""
    paired: List = []
    i = 0
    while i < len(stages):
        stage = stages[i]
        following = stages[i + 1] if i + 1 < len(stages) else None
        first_conv, second_conv = _single_conv(stage), _single_conv(following)
        if first_conv is not None and second_conv is not None and first_conv.onednn == second_conv.onednn:
            act1, act2 = stage.ffc.act_l, following.ffc.act_l
            paired.append(StripedPair(
                stage, following, ConvStage(second_conv, act2),
                first_size=first_conv.output_size,
                first_rows=lambda x, h, low, high, c=first_conv, a=act1: c.output_rows(
                    lambda lo, hi: x[:, :, lo:hi].to(c.dtype), h, low, high, a),
                first_bytes=lambda n, h, w, c=first_conv: c.out_channels * h * w * n * _itemsize(c.dtype),
                wrap_tuple=True,
            ))
            i += 2
            continue
        if isinstance(stage, PackedConvTranspose) and stage.phases is not None and isinstance(following, ConvStage):
            paired.append(StripedPair(
                stage, following, following,
                first_size=lambda h, w: (2 * h, 2 * w),
                first_rows=lambda x, h, low, high, t=stage: t.output_rows(x.to(t.dtype), low, high),
                first_bytes=lambda n, h, w, t=stage: t.out_channels * h * w * n * _itemsize(t.dtype),
                wrap_tuple=False,
            ))
            i += 2
            continue
        paired.append(stage)
        i += 1
    return paired
