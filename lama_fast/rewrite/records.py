"""The rewritten generator as plain records: folded float64 weights and geometry, no device, no packing.

An executor (``lama_fast.fast`` on the CPU, ``lama_fast.gpu.generator`` on a GPU)
turns each record into a layer it can run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable, Iterator, Optional, Tuple, Union

import torch

Pair = Tuple[int, int]


@dataclass(frozen=True, eq=False)
class Conv:
    """``act(conv(pad(x)) + bias)``: a 2-D convolution with its BatchNorm folded in.

    ``explicit_padding`` (left, right, top, bottom, None for none) is applied to the
    input in ``padding_mode`` first; ``conv_padding`` is the convolution's own zero padding.
    """

    weight: torch.Tensor  # (Cout, Cin, kh, kw), float64
    bias: Optional[torch.Tensor]  # (Cout,), float64
    stride: Pair = (1, 1)
    conv_padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    explicit_padding: Optional[Tuple[int, int, int, int]] = None
    padding_mode: str = "zeros"
    activation: Optional[str] = None
    output: bool = False  # the generator's last convolution, the one that makes the image

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def kernel_size(self) -> Pair:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def padless(self) -> bool:
        """Whether the convolution pads nothing (explicitly or by itself)."""
        return self.explicit_padding is None and tuple(self.conv_padding) == (0, 0)


@dataclass(frozen=True, eq=False)
class ConvTranspose:
    """A transposed convolution with its BatchNorm folded in, then an activation."""

    weight: torch.Tensor  # (Cin, Cout, kh, kw), float64
    bias: Optional[torch.Tensor]
    stride: Pair
    padding: Pair
    output_padding: Pair
    dilation: Pair
    activation: Optional[str] = None


@dataclass(frozen=True, eq=False)
class Spectral:
    """The weights the fused spectral transform takes (1x1 conv, Fourier unit, residual, 1x1 conv), float64.

    ``w1`` (Ch, Cin) and ``b1`` are conv1 with its BatchNorm, ``w_freq`` (2Ch, 2Ch) and
    ``b_freq`` the Fourier unit's conv with its BatchNorm, ``w2`` (Cout, Ch) conv2 (scaled by
    the layer's global BatchNorm when there is one); ``downsample``: average-pool by 2 first.
    """

    w1: torch.Tensor
    b1: torch.Tensor
    w_freq: torch.Tensor
    b_freq: torch.Tensor
    w2: torch.Tensor
    fft_norm: str = "ortho"
    downsample: bool = False


@dataclass(frozen=True, eq=False)
class FFC:
    """One FFC layer with its BatchNorms and activations: (local, global) in, (local, global) out.

    local  = act_l(conv_l2l(x_l) + conv_g2l(x_g))                 (BN_l folded)
    global = act_g(conv_l2g(x_l) + spectral(x_g) + bias_g)        (BN_g folded)

    The folded shift of each output is carried by its first convolution; ``bias_g`` is the
    global one when no l2g convolution carries it.  When the layer has no global input,
    ``merged`` replaces l2l and l2g: one convolution with the output channels of both,
    the first ``split`` of them local.
    """

    l2l: Optional[Conv]
    g2l: Optional[Conv]
    l2g: Optional[Conv]
    spectral: Optional[Spectral]
    merged: Optional[Conv]
    bias_g: Optional[torch.Tensor]
    act_l: Optional[str]
    act_g: Optional[str]
    split: int


@dataclass(frozen=True, eq=False)
class ResBlock:
    """Two FFC layers with a residual connection on both branches."""

    first: FFC
    second: FFC


@dataclass(frozen=True)
class Concat:
    """Joins (local, global) into one tensor, local channels first."""


@dataclass(frozen=True)
class Pad:
    """``F.pad(x, padding, mode)`` with ``padding`` = (left, right, top, bottom)."""

    padding: Tuple[int, int, int, int]
    mode: str


@dataclass(frozen=True)
class Activation:
    """An activation on its own ("relu", "sigmoid" or "tanh")."""

    name: Optional[str]


Record = Union[Conv, ConvTranspose, FFC, ResBlock, Concat, Pad, Activation]


def single_conv(stage: Record) -> Optional[Conv]:
    """The convolution of a Conv record, or of an FFC layer whose only branch is l2l; else None."""
    if isinstance(stage, Conv):
        return stage
    if (isinstance(stage, FFC) and stage.merged is None and stage.l2l is not None and stage.g2l is None
            and stage.l2g is None and stage.spectral is None):
        return stage.l2l
    return None


def fold_pads(stages: Iterable[Record], accept: Callable[[Pad, Record], bool]) -> Iterator[Record]:
    """``stages`` with each pad just before an unpadded convolution (see ``single_conv``) made that
    convolution's explicit padding, where ``accept(pad, stage)`` agrees; one record at a time."""
    previous: Optional[Record] = None
    for stage in stages:
        conv = single_conv(stage)
        if conv is not None and conv.padless and isinstance(previous, Pad) and accept(previous, stage):
            conv = replace(conv, explicit_padding=previous.padding, padding_mode=previous.mode)
            stage = conv if isinstance(stage, Conv) else replace(stage, l2l=conv)
            previous = None
        if previous is not None:
            yield previous
        previous = stage
    if previous is not None:
        yield previous


def same_geometry(a: Conv, b: Conv) -> bool:
    """Whether two convolutions read the same input pixels for each output pixel."""
    return (a.kernel_size == b.kernel_size and tuple(a.stride) == tuple(b.stride)
            and tuple(a.dilation) == tuple(b.dilation) and tuple(a.conv_padding) == tuple(b.conv_padding)
            and a.explicit_padding == b.explicit_padding and a.padding_mode == b.padding_mode)


def stack_convs(first: Conv, second: Conv) -> Conv:
    """One convolution computing two of the same geometry: ``first``'s output channels, then ``second``'s."""

    def bias(conv: Conv) -> torch.Tensor:
        return conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, dtype=torch.float64)

    return replace(first, weight=torch.cat((first.weight, second.weight)), bias=torch.cat((bias(first), bias(second))))
