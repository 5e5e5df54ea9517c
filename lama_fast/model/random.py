"""Seeded random weights in a released layout, for benchmarks and parity runs."""

from __future__ import annotations

from typing import Any, Mapping, Union

import torch
from torch import nn

from .generator import FFCResNetGenerator, build_generator


def random_generator(config: Union[str, Mapping[str, Any]] = "big-lama", seed: int = 0) -> FFCResNetGenerator:
    """A generator at PyTorch's default init with mildly randomised BatchNorm affine terms and statistics.

    With conv weights at the default (Kaiming-uniform, a=sqrt(5)) scale the
    activations stay O(1) through all 18 big-lama blocks, so the sigmoid
    output has a non-trivial spread and parity figures mean something.
    The global RNG state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = randomise_batchnorm(build_generator(config))
    return generator.eval()


def randomise_batchnorm(module: nn.Module) -> nn.Module:
    """Give every BatchNorm2d of ``module`` mildly random affine terms and statistics (from the global RNG)."""
    with torch.no_grad():
        for bn in module.modules():
            if isinstance(bn, nn.BatchNorm2d):
                n = bn.num_features
                bn.weight.copy_(1 + 0.1 * torch.randn(n))
                bn.bias.copy_(0.1 * torch.randn(n))
                bn.running_mean.copy_(0.1 * torch.randn(n))
                bn.running_var.copy_(1 + 0.25 * torch.rand(n))
    return module
