"""Triton kernels of LaMa's spectral transform, their host functions and ``torch.library`` ops.

One GEMM kernel, ``_pointwise_gemm``, does every 1x1 convolution of the
transform and every DFT-as-matmul stage::

    out[n, m, p] = epilogue(sum_k W[m, k] * (A[n, k, p] + A2[n, k, p]))
    epilogue(v)  = relu?(alpha * v + beta * bias[m] + other[n, m, p])

Operands are addressed through strides, with channel index ``k`` split as
``(k // K_GROUP) * stride_hi + (k % K_GROUP) * stride_lo`` (and ``m`` likewise
with ``M_GROUP``).  With a group of 2 the kernel reads and writes a complex
tensor (``torch.view_as_real`` of an rfft2 output) as LaMa's interleaved real
channels (channel 2c is Re of c, 2c+1 Im of c) where it lies, so the
frequency-domain mixing is one pass with no permute or copy.

Precision: float32 operands run with ``input_precision="ieee"`` (no TF32), or,
opted into with ``fp32_dot="tf32x3"``, as three TF32 tensor-core products of
split operands; float16 / bfloat16 operands run on the tensor cores with
float32 accumulation.  The FFT (cuFFT, or the DFT matrices) is always float32.

Importing this module imports triton; ``TRITON_INTERPRET=1`` must be set
before that on a machine without a GPU.
"""

from __future__ import annotations

import math
import os
from typing import Dict, NamedTuple, Optional, Tuple

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import FakeTensor
from torch.library import triton_op, wrap_triton

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
FFT_NORMS = ("ortho", "forward", "backward")
HALF_DTYPES = (torch.float16, torch.bfloat16)
DTYPES = (torch.float32,) + HALF_DTYPES
ROUTES = ("auto", "fft", "dft")
# The DFT-as-matmul Fourier unit runs when both sides of the map are at most this.  From
# bench/gpu_bench.py's crossover on an H100 (bench/results/gpu_nvidia_h100_80gb_hbm3.md): the
# cuFFT route was faster at every measured side (8 to 64, float32 and bfloat16), so 0: never.
DFT_MAX_SIDE = int(os.environ.get("LAMA_FAST_DFT_MAX_SIDE", "0"))

# Before cuFFT's irfft2, make the DC / Nyquist columns Hermitian (see hermitian_edges_), so the
# result is the transform's definition at every size; LAMA_FAST_HERMITIAN_EDGES=0 skips it.
HERMITIAN_EDGES = os.environ.get("LAMA_FAST_HERMITIAN_EDGES", "1") not in ("", "0")
# Dot-product modes of the kernel (its DOT constexpr).  DOT_TF32X3 splits each float32 operand
# into a TF32 high part and a TF32 remainder and sums three tensor-core products (hi*hi, hi*lo,
# lo*hi): close to float32's accuracy at tensor-core speed, offered as an opt-in float32 mode.
DOT_IEEE, DOT_FP16, DOT_BF16, DOT_TF32X3 = 0, 1, 2, 3
DOT_NAMES = {DOT_IEEE: "float32 (ieee, no TF32)", DOT_FP16: "float16 x float16 -> float32",
             DOT_BF16: "bfloat16 x bfloat16 -> float32",
             DOT_TF32X3: "float32 as 3xTF32 (split operands, tensor cores)"}
FP32_DOTS = {"ieee": DOT_IEEE, "tf32x3": DOT_TF32X3}


# Tile shapes (BLOCK_M, BLOCK_P, BLOCK_K, warps, stages) tried by the autotuner on a GPU: float32
# dots run on the FMA units, half-precision dots on the tensor cores, which want deeper K tiles.
FP32_TILES = [(64, 64, 32, 4, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3), (128, 128, 32, 8, 3),
              (32, 64, 32, 4, 3), (64, 32, 32, 4, 3)]
HALF_TILES = [(128, 128, 64, 8, 3), (128, 64, 64, 4, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4),
              (64, 64, 32, 4, 4), (32, 64, 64, 4, 3)]
TF32X3_TILES = [(128, 128, 32, 8, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3), (64, 64, 32, 4, 3)]
# The interpreter's one tile: small enough that the tiny test shapes span several tiles.
INTERPRETER_TILE = (32, 64, 16, 1, 1)
# LAMA_FAST_TRITON_AUTOTUNE=0 uses each list's first tile (fast start-up, e.g. for tests).
AUTOTUNE = os.environ.get("LAMA_FAST_TRITON_AUTOTUNE", "1") not in ("", "0")
AUTOTUNE_KEY = ["M", "K", "P", "K_GROUP", "M_GROUP", "DOT"]


def _config(tile) -> "triton.Config":
    m, p, k, warps, stages = tile
    return triton.Config({"BLOCK_M": m, "BLOCK_P": p, "BLOCK_K": k}, num_warps=warps, num_stages=stages)


@triton.jit
def _pointwise_gemm(
    w_ptr, a_ptr, a2_ptr, bias_ptr, other_ptr, out_ptr,
    M, K, P, alpha, beta,
    stride_wm, stride_wk,
    stride_an, stride_ak_hi, stride_ak_lo, stride_ap,
    stride_bn, stride_bk_hi, stride_bk_lo, stride_bp,
    stride_xn, stride_xm_hi, stride_xm_lo, stride_xp,
    stride_on, stride_om_hi, stride_om_lo, stride_op,
    K_GROUP: tl.constexpr, M_GROUP: tl.constexpr,
    HAS_A2: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_OTHER: tl.constexpr, RELU: tl.constexpr,
    DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_m = tl.program_id(1)
    n = tl.program_id(2).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    mask_m = offs_m < M
    mask_p = offs_p < P
    a_base = a_ptr + n * stride_an + offs_p[None, :] * stride_ap
    if HAS_A2:
        b_base = a2_ptr + n * stride_bn + offs_p[None, :] * stride_bp
    acc = tl.zeros((BLOCK_M, BLOCK_P), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        w = tl.load(w_ptr + offs_m[:, None] * stride_wm + offs_k[None, :] * stride_wk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        k_hi = offs_k // K_GROUP
        k_lo = offs_k % K_GROUP
        mask_kp = mask_k[:, None] & mask_p[None, :]
        a = tl.load(a_base + (k_hi * stride_ak_hi + k_lo * stride_ak_lo)[:, None], mask=mask_kp, other=0.0)
        if HAS_A2:
            a = a.to(tl.float32) + tl.load(b_base + (k_hi * stride_bk_hi + k_lo * stride_bk_lo)[:, None],
                                           mask=mask_kp, other=0.0).to(tl.float32)
        if DOT == 0:
            acc = tl.dot(w.to(tl.float32), a.to(tl.float32), acc, input_precision="ieee")
        elif DOT == 1:
            acc = tl.dot(w.to(tl.float16), a.to(tl.float16), acc)
        elif DOT == 3:
            acc = tl.dot(w.to(tl.float32), a.to(tl.float32), acc, input_precision="tf32x3")
        else:
            acc = tl.dot(w.to(tl.bfloat16), a.to(tl.bfloat16), acc)
    acc = acc * alpha
    if HAS_BIAS:
        acc += beta * tl.load(bias_ptr + offs_m, mask=mask_m, other=0.0).to(tl.float32)[:, None]
    m_hi = offs_m // M_GROUP
    m_lo = offs_m % M_GROUP
    mask_mp = mask_m[:, None] & mask_p[None, :]
    if HAS_OTHER:
        x_ptrs = other_ptr + n * stride_xn + (m_hi * stride_xm_hi + m_lo * stride_xm_lo)[:, None] \
            + offs_p[None, :] * stride_xp
        acc += tl.load(x_ptrs, mask=mask_mp, other=0.0).to(tl.float32)
    if RELU:
        acc = tl.maximum(acc, 0.0)
    o_ptrs = out_ptr + n * stride_on + (m_hi * stride_om_hi + m_lo * stride_om_lo)[:, None] \
        + offs_p[None, :] * stride_op
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_mp)


if INTERPRETING:
    _KERNELS = {}
    _FIXED_META = _config(INTERPRETER_TILE).kwargs
else:
    # One autotuner per dot mode, each over its own tiles (all wrap the same jitted kernel).
    _KERNELS = {
        dot: triton.autotune(configs=[_config(t) for t in (tiles if AUTOTUNE else tiles[:1])],
                             key=AUTOTUNE_KEY)(_pointwise_gemm)
        for dot, tiles in ((DOT_IEEE, FP32_TILES), (DOT_FP16, HALF_TILES), (DOT_BF16, HALF_TILES),
                           (DOT_TF32X3, TF32X3_TILES))
    }
    _FIXED_META = {}


class Operand(NamedTuple):
    """A tensor read as [n, k, p]: element (n, k, p) at n*sn + (k // group)*s_hi + (k % group)*s_lo + p*sp."""

    tensor: torch.Tensor
    sn: int
    s_hi: int
    s_lo: int
    sp: int


def nchw_operand(t: torch.Tensor) -> Operand:
    """An (N, C, H, W) tensor as [n, c, h*w]; H and W must be flattenable (stride_h == W * stride_w)."""
    n, c, h, w = t.shape
    sn, sc, sh, sw = t.stride()
    if h > 1 and w > 1 and sh != w * sw:
        raise ValueError(f"the spatial dims of a {list(t.shape)} tensor with strides {t.stride()} do not flatten")
    sp = sw if w > 1 else sh
    return Operand(t, sn, sc, 0, sp)


def complex_operand(spectrum_real: torch.Tensor) -> Operand:
    """A ``view_as_real`` complex (N, C, H, Wf, 2) tensor as [n, 2c + r, h*Wf] (LaMa's channel order)."""
    n, c, h, wf, _ = spectrum_real.shape
    sn, sc, sh, sw, sr = spectrum_real.stride()
    if h > 1 and wf > 1 and sh != wf * sw:
        raise ValueError("the spectrum's spatial dims do not flatten")
    return Operand(spectrum_real, sn, sc, sr, sw if wf > 1 else sh)


def dot_mode(dtype: torch.dtype, fp32_dot: str = "ieee") -> int:
    """The kernel's DOT constexpr for operands of ``dtype`` (``fp32_dot``: "ieee" or "tf32x3" for float32)."""
    if dtype == torch.float32:
        return FP32_DOTS[fp32_dot]
    return {torch.float16: DOT_FP16, torch.bfloat16: DOT_BF16}[dtype]


def pointwise_gemm(weight: torch.Tensor, a: Operand, out: Operand, batch: int, positions: int,
                   a2: Optional[Operand] = None, bias: Optional[torch.Tensor] = None,
                   other: Optional[Operand] = None, relu: bool = False, dot: int = DOT_IEEE,
                   k_group: int = 1, m_group: int = 1, alpha: float = 1.0, beta: float = 1.0) -> None:
    """Launch ``_pointwise_gemm``: out[n, m, p] = relu?(alpha W[m, :] . (a + a2)[n, :, p] + beta bias[m]
    + other[n, m, p])."""
    m_size, k_size = weight.shape
    if INTERPRETING and isinstance(out.tensor, FakeTensor):
        # The interpreter would run the kernel on fake tensors' missing data; shapes are all a fake needs.
        return
    dummy = out.tensor
    a2 = a2 if a2 is not None else Operand(dummy, 0, 0, 0, 0)
    other = other if other is not None else Operand(dummy, 0, 0, 0, 0)

    def grid(meta):
        return (triton.cdiv(positions, meta["BLOCK_P"]), triton.cdiv(m_size, meta["BLOCK_M"]), batch)

    kernel = _KERNELS.get(dot, _pointwise_gemm)
    wrap_triton(kernel)[grid](
        weight, a.tensor, a2.tensor, bias if bias is not None else dummy, other.tensor, out.tensor,
        m_size, k_size, positions, float(alpha), float(beta),
        weight.stride(0), weight.stride(1),
        a.sn, a.s_hi, a.s_lo, a.sp,
        a2.sn, a2.s_hi, a2.s_lo, a2.sp,
        other.sn, other.s_hi, other.s_lo, other.sp,
        out.sn, out.s_hi, out.s_lo, out.sp,
        K_GROUP=k_group, M_GROUP=m_group,
        HAS_A2=a2.tensor is not dummy, HAS_BIAS=bias is not None, HAS_OTHER=other.tensor is not dummy,
        RELU=relu, DOT=dot, **_FIXED_META,
    )


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


# --- DFT as matrix products --------------------------------------------------------------------

def _norm_scales(fft_norm: str, height: int, width: int) -> Tuple[float, float]:
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
    forward, inverse = _norm_scales(fft_norm, height, width)
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


def rfft2_by_dft(y: torch.Tensor, fft_norm: str) -> torch.Tensor:
    """``torch.fft.rfft2(y, norm=fft_norm)`` of a float32 NCHW-contiguous tensor, as two matrix products."""
    n, c, h, w = y.shape
    wf = w // 2 + 1
    w_fwd, h_fwd, _, _ = dft_matrices(h, w, fft_norm, y.device, _real(y))
    rows = torch.empty((n, c, h, wf), dtype=torch.complex64, device=y.device)
    rows_real = torch.view_as_real(rows)
    # Along W: rows (n, c, h) are the positions, w the reduction, (kw, r) the outputs.
    pointwise_gemm(w_fwd, Operand(y, 0, 1, 0, w), Operand(rows_real, 0, 1, 0, 2 * wf), 1, n * c * h)
    spectrum = torch.empty_like(rows)
    # Along H, complex: (n, c) is the batch, kw the positions, (h, r) the reduction, (kh, r) the outputs.
    _column_dft(h_fwd, rows, spectrum)
    return spectrum


def irfft2_by_dft(spectrum: torch.Tensor, width: int, fft_norm: str) -> torch.Tensor:
    """``torch.fft.irfft2(spectrum, s=(H, width), norm=fft_norm)`` as two matrix products (float32 NCHW)."""
    n, c, h, wf = spectrum.shape
    _, _, h_inv, w_inv = dft_matrices(h, width, fft_norm, spectrum.device, _real(spectrum))
    rows = torch.empty_like(spectrum)
    _column_dft(h_inv, spectrum, rows)
    out = torch.empty((n, c, h, width), dtype=torch.float32, device=spectrum.device)
    pointwise_gemm(w_inv, Operand(torch.view_as_real(rows), 0, 1, 0, 2 * wf), Operand(out, 0, 1, 0, width),
                   1, n * c * h)
    return out


def _column_dft(matrix: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> None:
    n, c, h, wf = source.shape
    src, dst = torch.view_as_real(source), torch.view_as_real(target)
    stride_h = 2 * wf
    pointwise_gemm(matrix, Operand(src, h * stride_h, stride_h, 1, 2), Operand(dst, h * stride_h, stride_h, 1, 2),
                   n * c, wf, k_group=2, m_group=2)


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
    if choose_route(h, w, route) == "dft":
        spectrum = rfft2_by_dft(y, fft_norm)
        mixed = frequency_mix(spectrum, w_freq, b_freq, dot)
        return irfft2_by_dft(mixed, w, fft_norm)
    # Unnormalised both ways ("backward" forward, "forward" inverse): the norm's scales go into the
    # mixing kernel instead of two extra passes over the spectrum and the output.
    forward, inverse = _norm_scales(fft_norm, h, w)
    spectrum = torch.fft.rfft2(y, norm="backward")
    mixed = frequency_mix(spectrum, w_freq, b_freq, dot, in_scale=forward, out_scale=inverse)
    if HERMITIAN_EDGES:
        hermitian_edges_(mixed, w)
    return torch.fft.irfft2(mixed, s=(h, w), norm="forward")


def precision_of(dtype: torch.dtype, height: int, width: int, route: str = "auto",
                 fp32_dot: str = "ieee") -> Dict[str, str]:
    """What each step of the spectral transform runs in, for activations of ``dtype``."""
    dot = DOT_NAMES[dot_mode(dtype, fp32_dot)]
    if choose_route(height, width, route) == "dft":
        fft = "float32 DFT matrices (ieee dots)"
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


# --- float64 references, next to the kernels they check ----------------------------------------

def fourier_unit_reference(y: torch.Tensor, w_freq: torch.Tensor, b_freq: torch.Tensor,
                           fft_norm: str = "ortho") -> torch.Tensor:
    """The Fourier unit with folded weights, in the dtype of ``y`` (float64 for the truth)."""
    n, c, h, w = y.shape
    spectrum = torch.fft.rfft2(y, norm=fft_norm)
    interleaved = torch.view_as_real(spectrum).permute(0, 1, 4, 2, 3).reshape(n, 2 * c, h, -1)
    mixed = torch.einsum("oi,nihw->nohw", w_freq.to(interleaved.dtype), interleaved)
    mixed = torch.relu(mixed + b_freq.to(mixed.dtype).view(1, -1, 1, 1)).view(n, c, 2, h, -1)
    return torch.fft.irfft2(torch.complex(mixed[:, :, 0], mixed[:, :, 1]), s=(h, w), norm=fft_norm)


def spectral_transform_reference(x, w1, b1, w_freq, b_freq, w2, bias=None, other=None, relu=False,
                                 fft_norm="ortho", fft_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The spectral transform with folded weights in the dtype of ``x``; the FFT in ``fft_dtype``
    (default: the dtype of x; float32 is what plain PyTorch must use for half-precision activations)."""
    dtype = x.dtype
    y = torch.relu(torch.einsum("oi,nihw->nohw", w1, x) + b1.view(1, -1, 1, 1))
    if fft_dtype is not None and fft_dtype != dtype:
        spectrum = torch.fft.rfft2(y.to(fft_dtype), norm=fft_norm)
        n, c, h, w = y.shape
        interleaved = torch.view_as_real(spectrum).permute(0, 1, 4, 2, 3).reshape(n, 2 * c, h, -1).to(dtype)
        mixed = torch.relu(torch.einsum("oi,nihw->nohw", w_freq, interleaved) + b_freq.view(1, -1, 1, 1))
        mixed = mixed.to(fft_dtype).view(n, c, 2, h, -1)
        u = torch.fft.irfft2(torch.complex(mixed[:, :, 0], mixed[:, :, 1]), s=(h, w), norm=fft_norm).to(dtype)
    else:
        u = fourier_unit_reference(y, w_freq, b_freq, fft_norm)
    out = torch.einsum("oi,nihw->nohw", w2, y + u)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    if other is not None:
        out = out + other
    return torch.relu(out) if relu else out
