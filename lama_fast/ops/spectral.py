"""LaMa's SpectralTransform and FourierUnit as single compiled CPU ops.

``torch.ops.lama_fast.spectral_transform`` and ``torch.ops.lama_fast.fourier_unit``
(schemas in ``csrc/cpu/module.cpp``; CPU ``csrc/cpu/spectral.cpp``, CUDA
``csrc/cuda/spectral_cuda.cpp``) take the layers' weights with BatchNorm
already folded in, accept NCHW or channels_last input, and return
channels_last output. Their fake kernels below give meta tensors and
``torch.compile`` the output's shape, dtype and memory format; their float64
references are in ``lama_fast.ops.reference``.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from lama_fast._build import extension_reasons, ops_reasons

FFT_NORMS = ("ortho", "forward", "backward")
DTYPES = (torch.float32, torch.float64, torch.bfloat16)
OPS = ("spectral_transform", "fourier_unit")
CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def spectral_reasons() -> List[str]:
    """Why the CPU spectral ops are not registered (empty when they are)."""
    return ops_reasons(OPS)


# Read once: the wrappers check it on every call, and torch.compile traces them.
_UNAVAILABLE = "; ".join(extension_reasons())


def _require_extension() -> None:
    if _UNAVAILABLE:
        raise RuntimeError(f"the compiled op is unavailable: {_UNAVAILABLE}")


def spectral_transform(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w_freq: torch.Tensor,
                       b_freq: torch.Tensor, w2: torch.Tensor, bias: Optional[torch.Tensor] = None,
                       other: Optional[torch.Tensor] = None, relu: bool = False,
                       fft_norm: str = "ortho") -> torch.Tensor:
    """conv1x1(y + FourierUnit(y), w2) + bias + other (ReLU if relu), y = relu(conv1x1(x, w1) + b1); channels_last."""
    _require_extension()
    return torch.ops.lama_fast.spectral_transform.default(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm)


def fourier_unit(x: torch.Tensor, w_freq: torch.Tensor, b_freq: torch.Tensor, fft_norm: str = "ortho") -> torch.Tensor:
    """irfft2(relu(conv1x1(rfft2(x) as interleaved (re, im) channels, w_freq) + b_freq)); channels_last."""
    _require_extension()
    return torch.ops.lama_fast.fourier_unit.default(x, w_freq, b_freq, fft_norm)


def _check_fake_inputs(op: str, x: torch.Tensor, tensors: dict, fft_norm: str) -> None:
    torch._check(x.dim() == 4, lambda: f"{op}: x must be a 4-D (N, C, H, W) tensor, got shape {list(x.shape)}")
    if x.device.type == "cuda":
        torch._check(
            x.dtype in CUDA_DTYPES,
            lambda: f"{op}: x must have dtype torch.float32, torch.float64, torch.float16 or torch.bfloat16, "
                    f"got {x.dtype}",
        )
    else:
        torch._check(
            x.dtype in DTYPES,
            lambda: f"{op}: x must have dtype torch.float32, torch.float64 or torch.bfloat16, got {x.dtype}",
        )
    for name, t in tensors.items():
        if t is not None:
            torch._check(
                t.dtype == x.dtype, lambda: f"{op}: {name} must have the dtype of x ({x.dtype}), got {t.dtype}"
            )
    torch._check(
        fft_norm in FFT_NORMS,
        lambda: f'{op}: fft_norm must be "ortho", "forward" or "backward", got "{fft_norm}"',
    )


def channels_last_output(x: torch.Tensor, channels: int) -> torch.Tensor:
    """A new (N, channels, H, W) channels_last tensor like x (N, C, H, W): what the ops return."""
    n, _, h, w = x.shape
    return torch.empty((n, channels, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


if not _UNAVAILABLE:

    @torch.library.register_fake("lama_fast::spectral_transform")
    def _spectral_transform_fake(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm):
        op = "spectral_transform"
        tensors = dict(w1=w1, b1=b1, w_freq=w_freq, b_freq=b_freq, w2=w2, bias=bias, other=other)
        _check_fake_inputs(op, x, tensors, fft_norm)
        ch = w1.shape[0]
        cout = w2.shape[0]
        torch._check(
            w1.dim() == 2 and w1.shape[1] == x.shape[1],
            lambda: f"{op}: w1 must be (Ch, Cin) with Cin = {x.shape[1]}, got {list(w1.shape)}",
        )
        torch._check(
            tuple(w_freq.shape) == (2 * ch, 2 * ch),
            lambda: f"{op}: w_freq must be (2*Ch, 2*Ch) with Ch = {ch}, got {list(w_freq.shape)}",
        )
        torch._check(
            w2.dim() == 2 and w2.shape[1] == ch,
            lambda: f"{op}: w2 must be (Cout, Ch) with Ch = {ch}, got {list(w2.shape)}",
        )
        return channels_last_output(x, cout)

    @torch.library.register_fake("lama_fast::fourier_unit")
    def _fourier_unit_fake(x, w_freq, b_freq, fft_norm):
        op = "fourier_unit"
        _check_fake_inputs(op, x, dict(w_freq=w_freq, b_freq=b_freq), fft_norm)
        c = x.shape[1]
        torch._check(
            tuple(w_freq.shape) == (2 * c, 2 * c),
            lambda: f"{op}: w_freq must be (2*C, 2*C) with C = {c}, got {list(w_freq.shape)}",
        )
        return channels_last_output(x, c)
