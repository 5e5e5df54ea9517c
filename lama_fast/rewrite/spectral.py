"""Folding a spectral transform (and its Fourier unit) into the weights of the fused spectral op."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .fold import UnsupportedModelError, batchnorm_scale_shift, fold_batchnorm
from .records import Spectral


def is_absent(module: Optional[nn.Module]) -> bool:
    """Whether ``module`` stands for a missing layer (None, or the original code's ``nn.Identity``)."""
    return module is None or isinstance(module, nn.Identity)


def _check_fourier_unit(fu: nn.Module, where: str) -> None:
    for flag in ("use_se", "spectral_pos_encoding", "ffc3d"):
        if getattr(fu, flag, False):
            raise UnsupportedModelError(f"{where}: the Fourier unit option {flag} is not supported")
    if getattr(fu, "spatial_scale_factor", None) is not None:
        raise UnsupportedModelError(f"{where}: the Fourier unit option spatial_scale_factor is not supported")
    if fu.conv_layer.groups != 1 or fu.conv_layer.bias is not None:
        raise UnsupportedModelError(f"{where}: the Fourier unit's conv must be ungrouped and bias-free")


def fold_fourier_unit(fu: nn.Module, where: str = "Fourier unit") -> Tuple[torch.Tensor, torch.Tensor]:
    """(w_freq (2C, 2C), b_freq) of a FourierUnit: its 1x1 conv with its BatchNorm folded in, float64."""
    _check_fourier_unit(fu, where)
    scale, shift = batchnorm_scale_shift(fu.bn, fu.conv_layer.out_channels)
    return fold_batchnorm(fu.conv_layer.weight.flatten(1), None, scale, shift)


def fold_spectral(st: nn.Module, scale_g: Optional[torch.Tensor] = None, where: str = "spectral transform") -> Spectral:
    """The fused op's weights for a SpectralTransform whose output is scaled by ``scale_g`` (BN_g; None: 1)."""
    if getattr(st, "enable_lfu", False) or not is_absent(getattr(st, "lfu", None)):
        raise UnsupportedModelError(f"{where}: the local Fourier unit (enable_lfu=True) is not fused")
    stride = getattr(st, "stride", 1)
    if stride not in (1, 2):
        raise UnsupportedModelError(f"{where}: spectral stride {stride} is not supported")
    conv1, bn1, relu1 = st.conv1[0], st.conv1[1], st.conv1[2]
    if not isinstance(relu1, nn.ReLU) or conv1.kernel_size != (1, 1) or conv1.groups != 1:
        raise UnsupportedModelError(f"{where}: conv1 is not a 1x1 conv + BN + ReLU")
    _check_fourier_unit(st.fu, where)
    scale1, shift1 = batchnorm_scale_shift(bn1, conv1.out_channels)
    w1, b1 = fold_batchnorm(conv1.weight.flatten(1), conv1.bias, scale1, shift1)
    w_freq, b_freq = fold_fourier_unit(st.fu, where)
    if st.conv2.bias is not None:
        raise UnsupportedModelError(f"{where}: conv2 with a bias is not supported")
    w2 = st.conv2.weight.detach().double().flatten(1)
    if scale_g is not None:
        w2 = w2 * scale_g.view(-1, 1)
    return Spectral(w1, b1, w_freq, b_freq, w2, getattr(st.fu, "fft_norm", "ortho"), stride == 2)
