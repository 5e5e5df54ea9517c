"""Triton kernels of LaMa's spectral transform, their host functions and ``torch.library`` ops.

The pieces of the transform (conv1x1_in, frequency_mix, conv1x1_out) run on the
GEMM kernel of ``lama_fast.kernels.gemm``; the FFT is cuFFT (``torch.fft``) or,
on the "dft" route, the DFT matrices of ``lama_fast.kernels.dft``, always in
float32 (on the "dft-tc" route their products run on tensor cores).  The ops
``lama_fast::triton_spectral_transform`` and
``lama_fast::triton_fourier_unit`` are registered here with
``torch.library.triton_op``; their float64 references are in
``lama_fast.ops.reference``.

Importing this module imports triton; ``TRITON_INTERPRET=1`` must be set
before that on a machine without a GPU.
"""

from __future__ import annotations

import os
from typing import Dict, Optional

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import FakeTensor
from torch.library import triton_op, wrap_triton

from .dft import irfft2_by_dft, norm_scales, rfft2_by_dft
from .gemm import (DOT_IEEE, DOT_NAMES, DOT_TF32X3, FP32_DOTS, INTERPRETING, complex_operand, dot_mode, nchw_operand,
                   pointwise_gemm)

FFT_NORMS = ("ortho", "forward", "backward")
HALF_DTYPES = (torch.float16, torch.bfloat16)
DTYPES = (torch.float32,) + HALF_DTYPES
# "dft-tc": the DFT matrices on tensor cores: their products with operands in the activations' half dtype
# (3xTF32 for float32 activations), accumulated in float32. Chosen only when asked for.
ROUTES = ("auto", "fft", "dft", "dft-tc")
# The DFT-as-matmul Fourier unit runs when both sides of the map are at most this.  From
# bench/gpu_bench.py's crossover on an H100 (bench/results/gpu_nvidia_h100_80gb_hbm3.md): the
# cuFFT route was faster at every measured side (8 to 64, float32 and bfloat16), so 0: never.
DFT_MAX_SIDE = int(os.environ.get("LAMA_FAST_DFT_MAX_SIDE", "0"))

# Before cuFFT's irfft2, make the DC / Nyquist columns Hermitian (see hermitian_edges_), so the
# result is the transform's definition at every size; LAMA_FAST_HERMITIAN_EDGES=0 skips it.
HERMITIAN_EDGES = os.environ.get("LAMA_FAST_HERMITIAN_EDGES", "1") not in ("", "0")


@triton.jit
def _hermitian_edges(z_ptr, H, stride_n, stride_h, column, BLOCK: tl.constexpr):
    # Pairs (kh, H - kh) of one column of one (n, c) plane: each pair is read and written by one lane.
    plane = tl.program_id(0).to(tl.int64)
    kh = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = kh <= H // 2
    partner = (H - kh) % H
    base = z_ptr + plane * stride_n + column * 2
    re_a = tl.load(base + kh * stride_h, mask=live, other=0.0)
    im_a = tl.load(base + kh * stride_h + 1, mask=live, other=0.0)
    re_b = tl.load(base + partner * stride_h, mask=live, other=0.0)
    im_b = tl.load(base + partner * stride_h + 1, mask=live, other=0.0)
    re = (re_a + re_b) * 0.5
    im = (im_a - im_b) * 0.5
    tl.store(base + kh * stride_h, re, mask=live)
    tl.store(base + kh * stride_h + 1, im, mask=live)
    tl.store(base + partner * stride_h, re, mask=live)
    tl.store(base + partner * stride_h + 1, -im, mask=live)


def hermitian_edges_(spectrum: torch.Tensor, width: int) -> torch.Tensor:
    """Replace the DC column (and the Nyquist column of an even ``width``) of a complex64 (N, C, H, Wf)
    spectrum by its Hermitian part X[kh] <- (X[kh] + conj(X[-kh])) / 2, in place.

    A c2r transform as defined (pocketfft on the CPU, the DFT route here) reads exactly this part of
    those columns; cuFFT's symmetric c2r kernels (used for some sizes, e.g. 128 and 256) read a
    non-Hermitian column differently, and LaMa's ReLU in the frequency domain makes them non-Hermitian.
    """
    n, c, h, wf = spectrum.shape
    if INTERPRETING and isinstance(spectrum, FakeTensor):
        return spectrum
    real = torch.view_as_real(spectrum)
    if real.stride(3) != 2 or real.stride(1) != h * real.stride(2) or real.stride(0) != c * real.stride(1):
        raise ValueError("the spectrum must be contiguous")
    block = 64
    for column in [0] + ([width // 2] if width % 2 == 0 else []):
        wrap_triton(_hermitian_edges)[(n * c, triton.cdiv(h // 2 + 1, block))](
            real, h, real.stride(1), real.stride(2), column, BLOCK=block)
    return spectrum


# --- the pieces of the spectral transform ------------------------------------------------------

def _flattenable(x: torch.Tensor) -> torch.Tensor:
    _, _, h, w = x.shape
    if h > 1 and w > 1 and x.stride(2) != w * x.stride(3):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def conv1x1_in(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, dot: Optional[int] = None) -> torch.Tensor:
    """relu(conv1x1(x, w1) + b1) as a float32 NCHW-contiguous tensor (the FFT's input)."""
    x = _flattenable(x)
    n, _, h, w = x.shape
    y = torch.empty((n, w1.shape[0], h, w), dtype=torch.float32, device=x.device)
    pointwise_gemm(w1, nchw_operand(x), nchw_operand(y), n, h * w, bias=b1, relu=True,
                   dot=dot_mode(x.dtype) if dot is None else dot)
    return y


def frequency_mix(spectrum: torch.Tensor, w_freq: torch.Tensor, b_freq: torch.Tensor, dot: int = DOT_IEEE,
                  out: Optional[torch.Tensor] = None, in_scale: float = 1.0, out_scale: float = 1.0) -> torch.Tensor:
    """out_scale * relu(conv1x1 over interleaved (re, im) channels of in_scale * spectrum, + b_freq), for a
    complex64 (N, C, H, Wf) spectrum.

    Reads and writes the complex tensors in place as float pairs; returns the complex result.  The
    scales carry an FFT norm, so that cuFFT runs unnormalised (ReLU commutes with a positive scale).
    """
    if spectrum.dtype != torch.complex64:
        raise ValueError(f"the spectrum must be complex64, got {spectrum.dtype}")
    n, c, h, wf = spectrum.shape
    if out is None:
        out = torch.empty_like(spectrum, memory_format=torch.contiguous_format)
    pointwise_gemm(w_freq, complex_operand(torch.view_as_real(spectrum)), complex_operand(torch.view_as_real(out)),
                   n, h * wf, bias=b_freq, relu=True, dot=dot, k_group=2, m_group=2,
                   alpha=in_scale * out_scale, beta=out_scale)
    return out


def conv1x1_out(y: torch.Tensor, u: torch.Tensor, w2: torch.Tensor, bias: Optional[torch.Tensor],
                other: Optional[torch.Tensor], relu: bool, out_dtype: torch.dtype,
                dot: Optional[int] = None) -> torch.Tensor:
    """relu?(conv1x1(y + u, w2) + bias + other), channels_last in ``out_dtype``."""
    n, _, h, w = y.shape
    out = torch.empty((n, w2.shape[0], h, w), dtype=out_dtype, device=y.device, memory_format=torch.channels_last)
    other_op = nchw_operand(_flattenable(other)) if other is not None else None
    pointwise_gemm(w2, nchw_operand(y), nchw_operand(out), n, h * w, a2=nchw_operand(u), bias=bias,
                   other=other_op, relu=relu, dot=dot_mode(out_dtype) if dot is None else dot)
    return out




def choose_route(height: int, width: int, route: str = "auto") -> str:
    """"dft" (DFT matrices) or "fft" (cuFFT) for a map of ``height`` x ``width``."""
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if route != "auto":
        return route
    return "dft" if max(height, width) <= DFT_MAX_SIDE else "fft"


def fourier_unit_spectrum(y: torch.Tensor, w_freq: torch.Tensor, b_freq: torch.Tensor, fft_norm: str,
                          route: str, dot: int) -> torch.Tensor:
    """The Fourier unit of a float32 NCHW-contiguous ``y``: float32 NCHW."""
    _, _, h, w = y.shape
    chosen = choose_route(h, w, route)
    if chosen in ("dft", "dft-tc"):
        dft_dot = DOT_IEEE if chosen == "dft" else dft_tensor_core_dot(dot)
        spectrum = rfft2_by_dft(y, fft_norm, dft_dot)
        mixed = frequency_mix(spectrum, w_freq, b_freq, dot)
        return irfft2_by_dft(mixed, w, fft_norm, dft_dot)
    # Unnormalised both ways ("backward" forward, "forward" inverse): the norm's scales go into the
    # mixing kernel instead of two extra passes over the spectrum and the output.
    forward, inverse = norm_scales(fft_norm, h, w)
    spectrum = torch.fft.rfft2(y, norm="backward")
    mixed = frequency_mix(spectrum, w_freq, b_freq, dot, in_scale=forward, out_scale=inverse)
    if HERMITIAN_EDGES:
        hermitian_edges_(mixed, w)
    return torch.fft.irfft2(mixed, s=(h, w), norm="forward")


def dft_tensor_core_dot(dot: int) -> int:
    """The DFT products' dot mode on the "dft-tc" route, for the op's own ``dot``: half operands as the
    activations, 3xTF32 for float32 ones."""
    return DOT_TF32X3 if dot in FP32_DOTS.values() else dot


def precision_of(dtype: torch.dtype, height: int, width: int, route: str = "auto",
                 fp32_dot: str = "ieee") -> Dict[str, str]:
    """What each step of the spectral transform runs in, for activations of ``dtype``."""
    dot = DOT_NAMES[dot_mode(dtype, fp32_dot)]
    chosen = choose_route(height, width, route)
    if chosen == "dft":
        fft = "float32 DFT matrices (ieee dots)"
    elif chosen == "dft-tc":
        fft = f"DFT matrices on tensor cores ({DOT_NAMES[dft_tensor_core_dot(dot_mode(dtype, fp32_dot))]})"
    else:
        fft = "float32 cuFFT (torch.fft), unnormalised, the norm's scales in the mixing kernel"
        if HERMITIAN_EDGES:
            fft += ", DC/Nyquist columns made Hermitian before the c2r"
    return {"conv1": dot, "fft": fft, "frequency_mix": dot, "conv2": dot,
            "intermediates": "float32", "output": str(dtype).replace("torch.", "")}


# --- torch.library ops -------------------------------------------------------------------------

def _check(x: torch.Tensor, fft_norm: str, route: str, fp32_dot: str, **weights: Optional[torch.Tensor]) -> None:
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {list(x.shape)}")
    if x.dtype not in DTYPES:
        raise ValueError(f"the triton kernels run in float32, float16 or bfloat16; got {x.dtype}")
    for name, t in weights.items():
        if t is not None and t.dtype != x.dtype:
            raise ValueError(f"{name} must have the dtype of x ({x.dtype}), got {t.dtype}")
    if fft_norm not in FFT_NORMS:
        raise ValueError(f"fft_norm must be one of {FFT_NORMS}, got {fft_norm!r}")
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if fp32_dot not in FP32_DOTS:
        raise ValueError(f"fp32_dot must be one of {tuple(FP32_DOTS)}, got {fp32_dot!r}")


@triton_op("lama_fast::triton_spectral_transform", mutates_args={})
def triton_spectral_transform(
    x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w_freq: torch.Tensor, b_freq: torch.Tensor,
    w2: torch.Tensor, bias: Optional[torch.Tensor] = None, other: Optional[torch.Tensor] = None,
    relu: bool = False, fft_norm: str = "ortho", route: str = "auto", fp32_dot: str = "ieee",
) -> torch.Tensor:
    """conv1x1(y + FourierUnit(y), w2) + bias + other (ReLU if relu), y = relu(conv1x1(x, w1) + b1); channels_last."""
    _check(x, fft_norm, route, fp32_dot, w1=w1, b1=b1, w_freq=w_freq, b_freq=b_freq, w2=w2, bias=bias, other=other)
    dot = dot_mode(x.dtype, fp32_dot)
    y = conv1x1_in(x, w1, b1, dot)
    u = fourier_unit_spectrum(y, w_freq, b_freq, fft_norm, route, dot)
    return conv1x1_out(y, u, w2, bias, other, relu, x.dtype, dot)


@triton_op("lama_fast::triton_fourier_unit", mutates_args={})
def triton_fourier_unit(x: torch.Tensor, w_freq: torch.Tensor, b_freq: torch.Tensor, fft_norm: str = "ortho",
                        route: str = "auto", fp32_dot: str = "ieee") -> torch.Tensor:
    """irfft2(relu(conv1x1(rfft2(x) as interleaved (re, im) channels, w_freq) + b_freq)); float32 NCHW."""
    _check(x, fft_norm, route, fp32_dot, w_freq=w_freq, b_freq=b_freq)
    y = x.float().contiguous()
    return fourier_unit_spectrum(y, w_freq, b_freq, fft_norm, route, dot_mode(x.dtype, fp32_dot))
