"""The real 2-D FFT pair as matrix products on the Triton GEMM kernel (``lama_fast.kernels.gemm``).

``rfft2_by_dft`` and ``irfft2_by_dft`` compute ``torch.fft.rfft2`` and
``torch.fft.irfft2`` of float32 NCHW tensors as two products each with the DFT
matrices (float32, the norm's scales folded into the W stages; the products in the
kernel's ``dot`` mode, float32 by default): the spectral transform's "dft" and
"dft-tc" routes for small maps.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
from torch._subclasses.fake_tensor import FakeTensor

from .gemm import DOT_IEEE, Operand, pointwise_gemm


def norm_scales(fft_norm: str, height: int, width: int) -> Tuple[float, float]:
    """(forward, inverse) scale of the whole 2-D transform for ``fft_norm``."""
    size = height * width
    if fft_norm == "ortho":
        return 1 / math.sqrt(size), 1 / math.sqrt(size)
    if fft_norm == "forward":
        return 1 / size, 1.0
    return 1.0, 1 / size


_DFT_CACHE: Dict[Tuple, Tuple[torch.Tensor, ...]] = {}


def dft_matrices(height: int, width: int, fft_norm: str, device: torch.device,
                 cache: bool = True) -> Tuple[torch.Tensor, ...]:
    """float32 (W-forward, H-forward, H-inverse, W-inverse) matrices of the rfft2 / irfft2 pair, in the
    kernel's [m, k] orientation, with the norm's scales folded into the W stages."""
    key = (height, width, fft_norm, str(device))
    cached = _DFT_CACHE.get(key)
    if cached is not None:
        return cached
    wf = width // 2 + 1
    forward, inverse = norm_scales(fft_norm, height, width)
    w = torch.arange(width, dtype=torch.float64)
    kw = torch.arange(wf, dtype=torch.float64)
    theta_w = 2 * math.pi * torch.outer(kw, w) / width            # (Wf, W)
    # rfft along W: row 2kw + r of the result, column w of the input.
    w_fwd = torch.stack((torch.cos(theta_w), -torch.sin(theta_w)), dim=1).reshape(2 * wf, width) * forward
    # irfft along W (c2r): Re and Im of bin kw weighted 1 at DC and Nyquist, 2 elsewhere.
    weights = torch.full((wf,), 2.0, dtype=torch.float64)
    weights[0] = 1.0
    if width % 2 == 0:
        weights[-1] = 1.0
    w_inv = torch.stack((torch.cos(theta_w) * weights[:, None], -torch.sin(theta_w) * weights[:, None]), dim=1)
    w_inv = w_inv.reshape(2 * wf, width).t().contiguous() * inverse   # (W, 2Wf)
    h = torch.arange(height, dtype=torch.float64)
    theta_h = 2 * math.pi * torch.outer(h, h) / height            # (kh, h), symmetric

    def complex_as_real(sign: float) -> torch.Tensor:
        # (a + ib) e^{sign i theta}: Re = a cos - sign b sin, Im = sign a sin + b cos.
        cos, sin = torch.cos(theta_h), torch.sin(theta_h)
        real_row = torch.stack((cos, -sign * sin), dim=-1)           # (kh, h, r)
        imag_row = torch.stack((sign * sin, cos), dim=-1)
        return torch.stack((real_row, imag_row), dim=1).reshape(2 * height, 2 * height)

    mats = tuple(m.to(device=device, dtype=torch.float32).contiguous()
                 for m in (w_fwd, complex_as_real(-1.0), complex_as_real(1.0), w_inv))
    if cache:
        _DFT_CACHE[key] = mats
    return mats


def _real(t: torch.Tensor) -> bool:
    """False for the fake tensors of tracing, whose derived matrices must not be cached."""
    return not isinstance(t, FakeTensor)


def rfft2_by_dft(y: torch.Tensor, fft_norm: str, dot: int = DOT_IEEE) -> torch.Tensor:
    """``torch.fft.rfft2(y, norm=fft_norm)`` of a float32 NCHW-contiguous tensor, as two matrix products."""
    n, c, h, w = y.shape
    wf = w // 2 + 1
    w_fwd, h_fwd, _, _ = dft_matrices(h, w, fft_norm, y.device, _real(y))
    rows = torch.empty((n, c, h, wf), dtype=torch.complex64, device=y.device)
    rows_real = torch.view_as_real(rows)
    # Along W: rows (n, c, h) are the positions, w the reduction, (kw, r) the outputs.
    pointwise_gemm(w_fwd, Operand(y, 0, 1, 0, w), Operand(rows_real, 0, 1, 0, 2 * wf), 1, n * c * h, dot=dot)
    spectrum = torch.empty_like(rows)
    # Along H, complex: (n, c) is the batch, kw the positions, (h, r) the reduction, (kh, r) the outputs.
    _column_dft(h_fwd, rows, spectrum, dot)
    return spectrum


def irfft2_by_dft(spectrum: torch.Tensor, width: int, fft_norm: str, dot: int = DOT_IEEE) -> torch.Tensor:
    """``torch.fft.irfft2(spectrum, s=(H, width), norm=fft_norm)`` as two matrix products (float32 NCHW)."""
    n, c, h, wf = spectrum.shape
    _, _, h_inv, w_inv = dft_matrices(h, width, fft_norm, spectrum.device, _real(spectrum))
    rows = torch.empty_like(spectrum)
    _column_dft(h_inv, spectrum, rows, dot)
    out = torch.empty((n, c, h, width), dtype=torch.float32, device=spectrum.device)
    pointwise_gemm(w_inv, Operand(torch.view_as_real(rows), 0, 1, 0, 2 * wf), Operand(out, 0, 1, 0, width),
                   1, n * c * h, dot=dot)
    return out


def _column_dft(matrix: torch.Tensor, source: torch.Tensor, target: torch.Tensor, dot: int = DOT_IEEE) -> None:
    n, c, h, wf = source.shape
    src, dst = torch.view_as_real(source), torch.view_as_real(target)
    stride_h = 2 * wf
    pointwise_gemm(matrix, Operand(src, h * stride_h, stride_h, 1, 2), Operand(dst, h * stride_h, stride_h, 1, 2),
                   n * c, wf, k_group=2, m_group=2, dot=dot)

