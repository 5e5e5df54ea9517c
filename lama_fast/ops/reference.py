"""The float64 reference of every ``torch.ops.lama_fast`` op: its math in plain PyTorch.

Tests, benchmarks and docs hold the ops to these (``docs/ops.md`` says which
reference checks which op):

* ``spectral_transform_reference``: ``spectral_transform``, its CUDA and
  Triton implementations and their emulation;
* ``fourier_unit_reference``: ``fourier_unit`` likewise;
* ``mixed_spectrum_reference``: the spectrum that the CUDA pipeline's inverse
  FFT reads (``cuda_emulated_mixed_spectrum``);
* ``conv3x3_reference``: ``conv3x3_winograd``.

Each casts its arguments to float64 and returns a float64 NCHW tensor. The
``plain_*`` functions are the same math in the arguments' own dtype: the
baseline a half-precision result is held to (at most twice plain PyTorch's
error). Weights are folded as the ops take them: BatchNorm folded in, 1x1
convolutions as (out, in) matrices, the frequency-domain ones on LaMa's
interleaved channels (channel 2c the real part of c, 2c + 1 its imaginary part).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

FFT_NORMS = ("ortho", "forward", "backward")


def _float64(*tensors: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:
    return tuple(None if t is None else t.double() for t in tensors)


def _conv1x1(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("oi,nihw->nohw", weight, x)


def _mix(spectrum: torch.Tensor, w_freq: torch.Tensor, b_freq: torch.Tensor,
         dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """relu(conv1x1(spectrum as interleaved (re, im) channels, w_freq) + b_freq) as a complex spectrum; the
    convolution in ``dtype`` (default: the spectrum's real dtype), the result in the spectrum's dtype."""
    n, c, h, wf = spectrum.shape
    interleaved = torch.view_as_real(spectrum).permute(0, 1, 4, 2, 3).reshape(n, 2 * c, h, wf)
    if dtype is not None:
        interleaved = interleaved.to(dtype)
    mixed = torch.relu(_conv1x1(w_freq.to(interleaved.dtype), interleaved)
                       + b_freq.to(interleaved.dtype).view(1, -1, 1, 1))
    mixed = mixed.to(spectrum.real.dtype).view(n, c, 2, h, wf)
    return torch.complex(mixed[:, :, 0], mixed[:, :, 1])


def _fourier_unit(y: torch.Tensor, w_freq: torch.Tensor, b_freq: torch.Tensor, fft_norm: str,
                  fft_dtype: Optional[torch.dtype]) -> torch.Tensor:
    dtype = y.dtype
    fft_dtype = fft_dtype or dtype
    spectrum = torch.fft.rfft2(y.to(fft_dtype), norm=fft_norm)
    mixed = _mix(spectrum, w_freq, b_freq, dtype)
    return torch.fft.irfft2(mixed, s=y.shape[-2:], norm=fft_norm).to(dtype)


def plain_fourier_unit(y: torch.Tensor, w_freq: torch.Tensor, b_freq: torch.Tensor,
                       fft_norm: str = "ortho") -> torch.Tensor:
    """irfft2(relu(conv1x1(rfft2(y) as interleaved (re, im) channels, w_freq) + b_freq)) in the dtype of y."""
    return _fourier_unit(y, w_freq, b_freq, fft_norm, None)


def fourier_unit_reference(x: torch.Tensor, w_freq: torch.Tensor, b_freq: torch.Tensor,
                           fft_norm: str = "ortho") -> torch.Tensor:
    """The reference of ``fourier_unit``: its math in float64, NCHW."""
    return plain_fourier_unit(*_float64(x, w_freq, b_freq), fft_norm)


def plain_spectral_transform(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w_freq: torch.Tensor,
                             b_freq: torch.Tensor, w2: torch.Tensor, bias: Optional[torch.Tensor] = None,
                             other: Optional[torch.Tensor] = None, relu: bool = False, fft_norm: str = "ortho",
                             fft_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """conv1x1(y + FourierUnit(y), w2) + bias + other (ReLU if relu), y = relu(conv1x1(x, w1) + b1), in the dtype
    of x with the FFTs in ``fft_dtype`` (default: that dtype; float32 is what plain PyTorch must use for
    half-precision activations)."""
    y = torch.relu(_conv1x1(w1, x) + b1.view(1, -1, 1, 1))
    out = _conv1x1(w2, y + _fourier_unit(y, w_freq, b_freq, fft_norm, fft_dtype))
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    if other is not None:
        out = out + other
    return torch.relu(out) if relu else out


def spectral_transform_reference(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w_freq: torch.Tensor,
                                 b_freq: torch.Tensor, w2: torch.Tensor, bias: Optional[torch.Tensor] = None,
                                 other: Optional[torch.Tensor] = None, relu: bool = False,
                                 fft_norm: str = "ortho") -> torch.Tensor:
    """The reference of ``spectral_transform``: its math in float64, NCHW."""
    return plain_spectral_transform(*_float64(x, w1, b1, w_freq, b_freq, w2, bias, other), relu, fft_norm)


def norm_scales(fft_norm: str, height: int, width: int) -> Tuple[float, float]:
    """(forward, inverse) scale of the 2-D transform of ``height`` x ``width`` points for ``fft_norm``."""
    size = height * width
    return {"ortho": (1 / math.sqrt(size), 1 / math.sqrt(size)), "forward": (1 / size, 1.0),
            "backward": (1.0, 1 / size)}[fft_norm]


def mixed_spectrum_reference(y: torch.Tensor, w_freq: torch.Tensor, b_freq: torch.Tensor,
                             fft_norm: str = "ortho") -> torch.Tensor:
    """The reference of ``cuda_emulated_mixed_spectrum``: s_i * relu(w_freq (s_f * rfft2(y)) + b_freq) over
    interleaved channels with (s_f, s_i) the norm's scales, complex128 (N, H, W // 2 + 1, C).

    The inverse FFT of it, unnormalised, is the Fourier unit; the op itself makes its DC and Nyquist
    columns Hermitian, which this statement does not.
    """
    y, w_freq, b_freq = _float64(y, w_freq, b_freq)
    forward, inverse = norm_scales(fft_norm, *y.shape[-2:])
    mixed = _mix(torch.fft.rfft2(y, norm="backward") * forward, w_freq, b_freq) * inverse
    return mixed.permute(0, 2, 3, 1)


def plain_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                  other: Optional[torch.Tensor] = None, relu: bool = False, reflect_pad: int = 0) -> torch.Tensor:
    """relu?(conv3x3(x) + bias + other) with F.conv2d in the dtype of x; with ``reflect_pad=1`` x is first padded
    by one pixel with reflection."""
    if reflect_pad:
        x = F.pad(x, (reflect_pad,) * 4, mode="reflect")
    y = F.conv2d(x, weight, bias)
    if other is not None:
        y = y + other
    return y.relu() if relu else y


def conv3x3_reference(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                      other: Optional[torch.Tensor] = None, relu: bool = False, reflect_pad: int = 0) -> torch.Tensor:
    """The reference of ``conv3x3_winograd`` (with the unpacked (Cout, Cin, 3, 3) weight): float64, NCHW."""
    x, weight, bias, other = _float64(x, weight, bias, other)
    return plain_conv3x3(x, weight, bias, other, relu, reflect_pad)
