"""The device-neutral rewrite (lama_fast.rewrite) as both executors take it: one set of checks, pads folded
by each executor's rule, the same numbers as the reference."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lama_fast.fast import build_fast_generator
from lama_fast.gpu.generator import GpuConv, build_gpu_generator
from lama_fast.kernels import triton_reasons
from lama_fast.model import FFC_BN_ACT
from lama_fast.model.ffc import ConcatTupleLayer
from lama_fast.ops.winograd import winograd_reasons
from lama_fast.rewrite import Conv, Pad, UnsupportedModelError, rewrite_generator
from lama_fast.rewrite.run import PadStage
from model_cases import randomise, scaled_error

TRITON_REASON = "; ".join(triton_reasons()) or None


class _Sequential(nn.Module):
    """A generator in LaMa's layout (its layers in ``model``) made of the given layers."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _padded_generator(first_kernel: int) -> nn.Module:
    """Every kind of pad before an unpadded convolution: reflect before an FFC layer, zeros and an
    uneven replicate pad before plain convolutions."""
    return randomise(_Sequential(
        nn.ReflectionPad2d(first_kernel // 2), FFC_BN_ACT(4, 8, first_kernel, 0, 0, activation=True),
        ConcatTupleLayer(),
        nn.ZeroPad2d(1), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
        nn.ReplicationPad2d((1, 1, 2, 0)), nn.Conv2d(8, 3, 3), nn.Sigmoid(),
    ), seed=4)


def _input(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 4, 20, 28, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _reference(generator: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return copy.deepcopy(generator).double()(x)


def _pads_left(stages) -> list:
    return [stage.mode for stage in stages if isinstance(stage, PadStage)]


def test_the_rewrite_leaves_the_pads_to_the_executors():
    records = rewrite_generator(_padded_generator(7))
    assert [type(r).__name__ for r in records] == ["Pad", "FFC", "Concat", "Pad", "Conv", "Pad", "Conv"]
    assert [r.mode for r in records if isinstance(r, Pad)] == ["reflect", "constant", "replicate"]
    convs = [r for r in records if isinstance(r, Conv)]
    assert [(c.activation, c.output, c.padless) for c in convs] == [("relu", False, True), ("sigmoid", True, True)]
    assert all(c.weight.dtype == torch.float64 and c.bias.dtype == torch.float64 for c in convs)


def test_cpu_folds_reflect_and_replicate_pads_only():
    generator = _padded_generator(7)
    fast = build_fast_generator(generator, torch.float64)
    assert _pads_left(fast.stages) == ["constant"]
    x = _input()
    assert scaled_error(fast(x), _reference(generator, x)) <= 1e-12


@pytest.mark.skipif(bool(winograd_reasons()), reason=f"Winograd unused here: {'; '.join(winograd_reasons())}")
def test_cpu_keeps_the_pad_before_a_winograd_convolution():
    generator = _padded_generator(3)
    assert _pads_left(build_fast_generator(generator, torch.float32).stages) == ["reflect", "constant"]
    direct = build_fast_generator(generator, torch.float32, conv_algorithm="direct")
    assert _pads_left(direct.stages) == ["constant"]
    x = _input(1)
    assert scaled_error(direct(x.float()), _reference(generator, x)) <= 1e-5


@pytest.mark.skipif(TRITON_REASON is not None, reason=f"triton unavailable: {TRITON_REASON}")
def test_gpu_folds_every_pad():
    generator = _padded_generator(7)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = build_gpu_generator(generator, device, torch.float32)
    assert _pads_left(gpu.stages) == []
    assert [s.padding_mode for s in gpu.stages if isinstance(s, GpuConv)] == ["constant", "replicate"]
    x = _input(2)
    assert scaled_error(gpu(x.float().to(device)).cpu(), _reference(generator, x)) <= 1e-5


@pytest.mark.parametrize("layer, message", [
    (nn.Conv2d(4, 8, 3, groups=2), "model.1: grouped convolutions (groups=2) are not supported"),
    (nn.ConvTranspose2d(4, 8, 3, groups=2), "model.1: grouped transposed convolutions are not supported"),
    (nn.Conv2d(4, 8, 3, padding="same"), "model.1: string padding 'same' is not supported"),
    (nn.LeakyReLU(), "model.1: layer LeakyReLU is not supported"),
    (nn.BatchNorm2d(4), "model.1: a BatchNorm2d not preceded by a convolution"),
])
def test_both_executors_refuse_with_one_message(layer, message):
    generator = _Sequential(nn.Identity(), layer)
    for build in (lambda: build_fast_generator(generator, torch.float32),
                  lambda: build_gpu_generator(generator, torch.device("cpu"), torch.float32)):
        with pytest.raises(UnsupportedModelError) as info:
            build()
        assert str(info.value) == message
