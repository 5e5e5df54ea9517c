"""What every executor runs the same way: activations, (local, global) pairs, residual blocks, joins, pads.

``build_stages`` turns a record list into callables, asking the executor only for
its FFC layers, convolutions and transposed convolutions; the stages then run in
order on a tensor or a (local, global) pair of channels-last tensors.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .fold import UnsupportedModelError
from .records import FFC, Activation, Concat, Conv, ConvTranspose, Pad, Record, ResBlock

CHANNELS_LAST = torch.channels_last
Branches = Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a channels-last contiguous tensor (no copy when it already is one)."""
    return x.contiguous(memory_format=CHANNELS_LAST)


def activate(x: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    """``x`` through the named activation (None: unchanged), in place."""
    if activation == "relu":
        return x.relu_()
    if activation == "sigmoid":
        return x.sigmoid_()
    if activation == "tanh":
        return x.tanh_()
    return x


def as_branches(x) -> Branches:
    """A (local, global) pair: ``x`` itself, or a plain tensor as the local branch."""
    return x if isinstance(x, tuple) else (x, None)


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


def concat_branches(x) -> Any:
    """Join (local, global) along channels, local first (a plain tensor passes through)."""
    if not isinstance(x, tuple):
        return x
    x_l, x_g = x
    if x_g is None:
        return x_l
    if x_l is None:
        return x_g
    return to_channels_last(torch.cat((x_l, x_g), dim=1))


def global_output(spectral: Optional[Callable], l2g: Optional[Callable], x_l, x_g, bias_g: Optional[torch.Tensor],
                  act_g: Optional[str]) -> Optional[torch.Tensor]:
    """An FFC layer's global output ``act_g(l2g(x_l) + spectral(x_g) + bias_g)`` (None without either).

    ``l2g(x, other, activation)`` is the executor's convolution and ``x_l`` its input
    (padded already where the executor pads first); the spectral op adds the
    convolution's result and applies the ReLU.
    """
    if spectral is not None:
        other = l2g(x_l) if l2g is not None else None
        bias = None if l2g is not None else bias_g
        return spectral(x_g, bias, other, act_g == "relu")
    if l2g is not None:
        return l2g(x_l, None, act_g)
    return None


def check_input(x, in_channels: Optional[int]) -> None:
    """Refuse anything but an (N, C, H, W) tensor with ``in_channels`` channels (None: any)."""
    if not torch.is_tensor(x) or x.dim() != 4:
        raise ValueError(f"expected an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if in_channels is not None and x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channels, got {x.shape[1]}")


def chain(stages: Sequence, x):
    """Run ``x`` through callables in order."""
    for stage in stages:
        x = stage(x)
    return x


class Layer:
    """An FFC layer as a stage: a plain tensor in is its local branch."""

    def __init__(self, ffc: Callable[[Branches], Branches]) -> None:
        self.ffc = ffc

    def __call__(self, x) -> Branches:
        return self.ffc(as_branches(x))


class ResidualBlock:
    """Two FFC layers with a residual connection on both branches."""

    def __init__(self, first: Callable[[Branches], Branches], second: Callable[[Branches], Branches]) -> None:
        self.first, self.second = first, second

    def __call__(self, x) -> Branches:
        x = as_branches(x)
        return add_branches(x, self.second(self.first(x)))


class ResidualConcat(ResidualBlock):
    """A residual block followed by the concatenation of its branches: the residual sums are written
    straight into the two channel ranges of the joined tensor, so the join copies nothing."""

    def __call__(self, x):
        x = as_branches(x)
        y = self.second(self.first(x))
        if any(t is None for t in x + y):
            return concat_branches(add_branches(x, y))
        (x_l, x_g), (y_l, y_g) = x, y
        split = y_l.shape[1]
        out = torch.empty((y_l.shape[0], split + y_g.shape[1], *y_l.shape[2:]), dtype=y_l.dtype,
                          memory_format=CHANNELS_LAST)
        torch.add(y_l, x_l, out=out[:, :split])
        torch.add(y_g, x_g, out=out[:, split:])
        return out


def fuse_concat(stages: Sequence) -> List[Any]:
    """``stages`` with each residual block that is followed by the concatenation of branches made a
    ``ResidualConcat`` (one stage instead of two)."""
    fused: List[Any] = []
    for stage in stages:
        if stage is concat_branches and fused and type(fused[-1]) is ResidualBlock:
            block = fused.pop()
            fused.append(ResidualConcat(block.first, block.second))
        else:
            fused.append(stage)
    return fused


class PadStage:
    """A padding layer on a plain tensor."""

    def __init__(self, pad: Pad) -> None:
        self.padding, self.mode = pad.padding, pad.mode

    def __call__(self, x):
        if isinstance(x, tuple):
            raise UnsupportedModelError("a padding layer between FFC layers is not supported")
        return to_channels_last(F.pad(x, self.padding, mode=self.mode))


class ActivationStage:
    """An activation layer (in place)."""

    def __init__(self, name: Optional[str]) -> None:
        self.name = name

    def __call__(self, x):
        return activate(x, self.name)


def build_stages(records: Iterable[Record], ffc: Callable[[FFC], Any], conv: Callable[[Conv], Any],
                 transpose: Callable[[ConvTranspose], Any]) -> List[Any]:
    """The stages running ``records``, with the executor's ``ffc``, ``conv`` and ``transpose`` layers."""
    stages: List[Any] = []
    for record in records:
        if isinstance(record, FFC):
            stages.append(Layer(ffc(record)))
        elif isinstance(record, ResBlock):
            stages.append(ResidualBlock(ffc(record.first), ffc(record.second)))
        elif isinstance(record, Concat):
            stages.append(concat_branches)
        elif isinstance(record, Pad):
            stages.append(PadStage(record))
        elif isinstance(record, Activation):
            stages.append(ActivationStage(record.name))
        elif isinstance(record, Conv):
            stages.append(conv(record))
        elif isinstance(record, ConvTranspose):
            stages.append(transpose(record))
        else:
            raise TypeError(f"not a stage record: {type(record).__name__}")
    return stages


def ffc_layers(stages: Sequence) -> List[Any]:
    """The executor's FFC layers among ``stages``, in order."""
    found: List[Any] = []
    for stage in stages:
        if isinstance(stage, Layer):
            found.append(stage.ffc)
        elif isinstance(stage, ResidualBlock):
            found += [stage.first, stage.second]
    return found
