"""An independent float64 NumPy statement of LaMa's Fourier layers, read from DESIGN.md and the paper.

It shares no code with lama_fast.model or lama_fast.ops.reference: it works on
state-dict tensors (BatchNorm unfolded) and numpy's FFT, so a mistake in the
module (channel interleaving, FFT norm, LFU tiling, gating) shows up as a
mismatch in tests/test_model.py. It is also the reference's reference:
tests/test_ops.py::test_references_match_numpy holds the float64 references
of the fused ops (lama_fast.ops.reference) to it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

BN_EPS = 1e-5


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def batchnorm(x: np.ndarray, sd: dict, prefix: str) -> np.ndarray:
    scale = _np(sd[prefix + "weight"]) / np.sqrt(_np(sd[prefix + "running_var"]) + BN_EPS)
    shift = _np(sd[prefix + "bias"]) - _np(sd[prefix + "running_mean"]) * scale
    return x * scale[None, :, None, None] + shift[None, :, None, None]


def conv1x1(x: np.ndarray, weight: torch.Tensor, bias=None) -> np.ndarray:
    w = _np(weight)[:, :, 0, 0]
    y = np.einsum("oc,nchw->nohw", w, x)
    if bias is not None:
        y = y + _np(bias)[None, :, None, None]
    return y


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def fourier_unit(x: np.ndarray, sd: dict, prefix: str, norm: str) -> np.ndarray:
    n, c, h, w = x.shape
    spec = np.fft.rfft2(x, axes=(-2, -1), norm=norm)
    stacked = np.empty((n, 2 * c, h, spec.shape[-1]))
    stacked[:, 0::2] = spec.real
    stacked[:, 1::2] = spec.imag
    mixed = relu(batchnorm(conv1x1(stacked, sd[prefix + "conv_layer.weight"]), sd, prefix + "bn."))
    spec = mixed[:, 0::2] + 1j * mixed[:, 1::2]
    return np.fft.irfft2(spec, s=(h, w), axes=(-2, -1), norm=norm)


def spectral_transform(x: np.ndarray, sd: dict, prefix: str = "", stride: int = 1,
                       lfu: bool = False, norm: str = "ortho") -> np.ndarray:
    if stride == 2:
        n, c, h, w = x.shape
        x = x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    x = relu(batchnorm(conv1x1(x, sd[prefix + "conv1.0.weight"]), sd, prefix + "conv1.1."))
    total = x + fourier_unit(x, sd, prefix + "fu.", norm)
    if lfu:
        c, side = x.shape[1], x.shape[2]
        half = side // 2
        q = x[:, : c // 4]
        # Tiles stacked on channels in the order top-left, bottom-left, top-right, bottom-right.
        tiles = np.concatenate(
            [q[:, :, :half, :half], q[:, :, half:, :half], q[:, :, :half, half:], q[:, :, half:, half:]], axis=1
        )
        local = fourier_unit(tiles, sd, prefix + "lfu.", "ortho")
        total = total + np.tile(local, (1, 1, 2, 2))
    return conv1x1(total, sd[prefix + "conv2.weight"])


def conv_reflect(x: np.ndarray, weight: torch.Tensor, padding: int, stride: int = 1) -> np.ndarray:
    t = torch.from_numpy(x)
    if padding:
        t = F.pad(t, (padding,) * 4, mode="reflect")
    return F.conv2d(t, weight.double(), stride=stride).numpy()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))
