"""The Triton GEMM kernel of the spectral transform, ``_pointwise_gemm``, and its launcher.

One kernel does every 1x1 convolution of the transform and every DFT-as-matmul
stage (``lama_fast.kernels.dft``)::

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
float32 accumulation.

Importing this module imports triton; ``TRITON_INTERPRET=1`` must be set
before that on a machine without a GPU.
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import FakeTensor
from torch.library import wrap_triton

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
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

