"""The device-neutral rewrite of a LaMa generator for inference.

BatchNorm folded into the convolutions, the two convolutions of a local-only
input merged, the spectral transform's weights folded for the fused op, a pad
folded into the unpadded convolution after it (where the executor takes it): the
result is a list of float64 records (``records``) that each executor turns into layers
it runs (``lama_fast.fast`` on the CPU, ``lama_fast.gpu.generator`` on a GPU),
with the stages both run alike in ``run``.
"""

from __future__ import annotations

from .fold import UnsupportedModelError, batchnorm_scale_shift, fold_batchnorm
from .generator import (
    activation_name,
    conv_followers,
    input_channels,
    iter_records,
    plain_stage,
    rewrite_ffc_layer,
    rewrite_generator,
)
from .records import (
    FFC,
    Activation,
    Concat,
    Conv,
    ConvTranspose,
    Pad,
    Record,
    ResBlock,
    Spectral,
    fold_pads,
    same_geometry,
    single_conv,
    stack_convs,
)
from .spectral import fold_fourier_unit, fold_spectral

__all__ = [
    "UnsupportedModelError", "batchnorm_scale_shift", "fold_batchnorm", "fold_fourier_unit", "fold_spectral",
    "rewrite_generator", "iter_records", "rewrite_ffc_layer", "input_channels", "conv_followers", "plain_stage", "activation_name",
    "fold_pads", "same_geometry", "single_conv", "stack_convs",
    "Activation", "Concat", "Conv", "ConvTranspose", "FFC", "Pad", "Record", "ResBlock", "Spectral",
]
