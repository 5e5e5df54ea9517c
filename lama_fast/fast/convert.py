"""The CPU executor: the rewrite's records (``lama_fast.rewrite``) as prepacked CPU layers.

Which algorithm each convolution runs with (oneDNN, Winograd, plain PyTorch in
float64) is decided here; so is which pads fold into the convolution after them:
reflect and replicate pads, and not into a Winograd convolution (which reads a
one-pixel reflect padding in place instead).
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional

import torch
from torch import nn

from ..rewrite import FFC, Conv, ConvTranspose, Pad, Record, fold_pads, iter_records, rewrite_ffc_layer
from ..rewrite.run import build_stages, fuse_concat
from .ffc import FastFFC, FusedSpectral
from .layers import ConvStage, PackedConv, chooses_winograd, winograd_fits
from .stripes import pair_up
from .transpose import PackedConvTranspose


def packed_conv(conv: Conv, dtype: torch.dtype, algorithm: str = "direct") -> PackedConv:
    """The PackedConv of a Conv record, in ``dtype``."""
    return PackedConv(conv.weight, conv.bias, dtype, conv.stride, conv.conv_padding, conv.dilation,
                      conv.explicit_padding, conv.padding_mode, algorithm)


def fast_ffc(ffc: FFC, dtype: torch.dtype, conv_algorithm: str = "auto") -> FastFFC:
    """The FastFFC of an FFC record; ``conv_algorithm`` applies to its branch convolutions."""

    def packed(conv: Optional[Conv], algorithm: str) -> Optional[PackedConv]:
        return None if conv is None else packed_conv(conv, dtype, algorithm)

    merged = None
    if ffc.merged is not None:
        # Two convolutions sharing one padded input, so that each output is a tensor of its own (the
        # next layer reads it without copying a channel slice).
        conv, halves = ffc.merged, (slice(0, ffc.split), slice(ffc.split, None))
        merged = tuple(packed_conv(replace(conv, weight=conv.weight[part],
                                           bias=None if conv.bias is None else conv.bias[part]), dtype)
                       for part in halves)
    return FastFFC(packed(ffc.l2l, conv_algorithm), packed(ffc.g2l, conv_algorithm), packed(ffc.l2g, conv_algorithm),
                   None if ffc.spectral is None else FusedSpectral(ffc.spectral, dtype), merged,
                   None if ffc.bias_g is None else ffc.bias_g.to(dtype), ffc.act_l, ffc.act_g, ffc.split)


def convert_ffc_layer(layer: nn.Module, dtype: torch.dtype, where: str, conv_algorithm: str = "auto") -> FastFFC:
    """An FFC_BN_ACT (ours or the original's) as a FastFFC with its BatchNorms folded.

    ``conv_algorithm`` applies to the stride-1 3x3 convolutions between the
    branches: "auto" takes the Winograd kernels where they are usable (float32,
    AVX2/AVX-512), "direct" always oneDNN's direct convolution.
    """
    return fast_ffc(rewrite_ffc_layer(layer, where), dtype, conv_algorithm)


def convert_stages(generator: nn.Module, dtype: torch.dtype, output_conv_dtype: Optional[torch.dtype] = None,
                   conv_algorithm: str = "auto") -> List:
    """The generator's ``model`` Sequential as a list of fused callables.

    ``output_conv_dtype`` (default ``dtype``) is the dtype of the last convolution, the one
    that makes the image: bfloat16 there would cost the output about a level of 8-bit colour.
    """

    def folds(pad: Pad, stage: Record) -> bool:
        # A reflect/replicate pad becomes the convolution's own padding, so a large input is
        # padded stripe by stripe; only FFC layers' convolutions may run as Winograd.
        if pad.mode == "constant":
            return False
        conv = stage.l2l if isinstance(stage, FFC) else stage
        algorithm = conv_algorithm if isinstance(stage, FFC) else "direct"
        fits = winograd_fits(dtype, conv.kernel_size, conv.stride, conv.dilation, conv.conv_padding)
        return not chooses_winograd(algorithm, fits)

    def conv(record: Conv) -> ConvStage:
        conv_dtype = output_conv_dtype if (record.output and output_conv_dtype is not None) else dtype
        return ConvStage(packed_conv(record, conv_dtype), record.activation)

    def transpose(record: ConvTranspose) -> PackedConvTranspose:
        return PackedConvTranspose(record.weight, record.bias, dtype, record.stride, record.padding,
                                   record.output_padding, record.dilation, record.activation)

    records = fold_pads(iter_records(generator), folds)
    return pair_up(fuse_concat(build_stages(records, lambda ffc: fast_ffc(ffc, dtype, conv_algorithm), conv,
                                            transpose)))


__all__ = ["convert_stages", "convert_ffc_layer", "fast_ffc", "packed_conv"]
