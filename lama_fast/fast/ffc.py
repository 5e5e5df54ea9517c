"""The CPU's FFC layer and its fused spectral transform."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from ..ops.spectral import spectral_transform, spectral_transform_into
from ..rewrite import Spectral
from ..rewrite.run import Branches, global_output
from .layers import PackedConv


class FusedSpectral:
    """The spectral transform (1x1 conv, Fourier unit, residual, 1x1 conv) as one fused op."""

    def __init__(self, spectral: Spectral, dtype: torch.dtype) -> None:
        self.w1 = spectral.w1.to(dtype).contiguous()
        self.b1 = spectral.b1.to(dtype).contiguous()
        self.w_freq = spectral.w_freq.to(dtype).contiguous()
        self.b_freq = spectral.b_freq.to(dtype).contiguous()
        self.w2 = spectral.w2.to(dtype).contiguous()
        self.fft_norm = spectral.fft_norm
        self.downsample = spectral.downsample
        self.out_channels = int(spectral.w2.shape[0])

    def __call__(self, x: torch.Tensor, bias: Optional[torch.Tensor], other: Optional[torch.Tensor],
                 relu: bool) -> torch.Tensor:
        if self.downsample:
            x = F.avg_pool2d(x, kernel_size=2, stride=2)
        if other is not None and not (torch.is_grad_enabled() and (x.requires_grad or other.requires_grad)) \
                and other.is_contiguous(memory_format=torch.channels_last):
            # ``other`` is the l2g convolution's new output: the spectral transform accumulates onto it.
            return spectral_transform_into(x, self.w1, self.b1, self.w_freq, self.b_freq, self.w2, bias, other,
                                           relu, self.fft_norm)
        return spectral_transform(x, self.w1, self.b1, self.w_freq, self.b_freq, self.w2, bias, other, relu,
                                  self.fft_norm)


class FastFFC:
    """One FFC layer (``lama_fast.rewrite.FFC``) on the CPU: (local, global) in, (local, global) out.

    The padded copy of an input is made once for the convolutions that share it; the
    second convolution of an output adds the first's result (oneDNN's fused add).  A layer
    without global input has ``merged``: its local and global convolutions, one padded input.
    """

    def __init__(self, l2l: Optional[PackedConv], g2l: Optional[PackedConv], l2g: Optional[PackedConv],
                 spectral: Optional[FusedSpectral], merged: Optional[Tuple[PackedConv, PackedConv]],
                 bias_g: Optional[torch.Tensor], act_l: Optional[str], act_g: Optional[str], split: int) -> None:
        self.l2l, self.g2l, self.l2g, self.spectral, self.merged = l2l, g2l, l2g, spectral, merged
        # The global output's folded BatchNorm shift when no l2g convolution carries it.
        self.bias_g = bias_g
        self.act_l, self.act_g = act_l, act_g
        self.split = split

    def __call__(self, x: Branches) -> Branches:
        x_l, x_g = x
        if self.merged is not None:
            to_local, to_global = self.merged
            if to_local.wants_stripes(x_l):
                return to_local.run(x_l, self.act_l), to_global.run(x_l, self.act_l)
            padded = to_local.pad(x_l)
            return to_local(padded, None, self.act_l), to_global(padded, None, self.act_l)
        if self.l2l is not None and self.g2l is None and self.l2g is None and self.spectral is None:
            return self.l2l.run(x_l, self.act_l), None
        local = None
        # The local input's padded copy, shared by l2l and l2g (made once, and not at
        # all when both read their padding in place).
        padded_l = self.l2l.pad(x_l) if self.l2l is not None else None
        if self.l2g is not None and (padded_l is None or self.l2l.explicit_padding != self.l2g.explicit_padding):
            padded_for_l2g = self.l2g.pad(x_l)
        else:
            padded_for_l2g = padded_l
        padded_g = self.g2l.pad(x_g) if self.g2l is not None else None
        # Local output: the second convolution adds the first's result and applies the activation.
        if self.l2l is not None and self.g2l is not None:
            local = self.g2l(padded_g, self.l2l(padded_l), self.act_l)
        elif self.l2l is not None:
            local = self.l2l(padded_l, None, self.act_l)
        elif self.g2l is not None:
            local = self.g2l(padded_g, None, self.act_l)
        return local, global_output(self.spectral, self.l2g, padded_for_l2g, x_g, self.bias_g, self.act_g)
