"""Folding eval-mode BatchNorm into the weights of the layer before it."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn


def batchnorm_scale_shift(bn: Optional[nn.Module], channels: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The per-channel (scale, shift) with ``bn(x) == x * scale + shift`` in eval mode, in float64.

    ``None`` or ``nn.Identity`` (the original code's stand-in for a missing
    norm) is the identity.
    """
    if bn is None or isinstance(bn, nn.Identity):
        return torch.ones(channels, dtype=torch.float64), torch.zeros(channels, dtype=torch.float64)
    if not isinstance(bn, nn.BatchNorm2d):
        raise UnsupportedModelError(f"cannot fold {type(bn).__name__} (only BatchNorm2d and Identity)")
    if bn.num_features != channels:
        raise UnsupportedModelError(f"BatchNorm2d has {bn.num_features} features, the layer before it {channels}")
    if not bn.track_running_stats or bn.running_mean is None:
        raise UnsupportedModelError("BatchNorm2d without running statistics cannot be folded")
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach().double()
        shift = bn.bias.detach().double() - mean * scale
    else:
        shift = -mean * scale
    return scale, shift


def fold_batchnorm(
    weight: torch.Tensor, bias: Optional[torch.Tensor], scale: torch.Tensor, shift: torch.Tensor,
    out_dim: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias (float64) of ``bn(conv(x))`` for a conv whose output channels lie on ``out_dim``."""
    weight = weight.detach().double()
    shape = [1] * weight.dim()
    shape[out_dim] = -1
    folded_weight = weight * scale.view(shape)
    folded_bias = shift.clone()
    if bias is not None:
        folded_bias = folded_bias + bias.detach().double() * scale
    return folded_weight, folded_bias


class UnsupportedModelError(ValueError):
    """The generator uses a feature the fast backend does not implement (the reference runs it)."""
