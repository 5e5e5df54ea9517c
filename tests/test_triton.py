"""The Triton kernels and the triton backend against float64 references (lama_fast.ops.reference) and the golden
vectors.

Without a GPU these run in Triton's interpreter on CPU tensors (tests/conftest.py sets
TRITON_INTERPRET=1 before triton is imported).  The interpreter has no bfloat16
arithmetic (its casts and loads of bfloat16 are wrong), so half precision is checked
in float16 there, and bfloat16 only on a GPU.  Tests that time or compile need a GPU
and are skipped on CPU machines.
"""

from __future__ import annotations

import os

import pytest
import torch

import lama_fast
from lama_fast.backends import available_backends
from lama_fast.fast import UnsupportedModelError
from lama_fast.kernels import triton_reasons
from lama_fast.model import SpectralTransform, build_generator
from lama_fast.ops.reference import fourier_unit_reference, plain_spectral_transform, spectral_transform_reference
from configs import tiny_config
from op_cases import rand, spectral_weights
from model_cases import golden_batch, golden_generator, scaled_error

TRITON_REASONS = triton_reasons()
pytestmark = pytest.mark.skipif(bool(TRITON_REASONS), reason=f"triton unavailable: {'; '.join(TRITON_REASONS)}")
ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
GPU_ONLY = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU (the interpreter checks results, not speed "
                                                  "or compilation)")
# The interpreter's bfloat16 loads, stores and casts are wrong; float16 is exact there.
HALF_DTYPES = [torch.float16] + ([torch.bfloat16] if not INTERPRETED else [])
FLOAT32_TOL = 1e-5
NORMS = ("ortho", "forward", "backward")
SHAPES = [(1, 6, 12, 20), (2, 12, 7, 9), (2, 6, 7, 9), (1, 12, 12, 20)]

if not TRITON_REASONS:
    from lama_fast.kernels import dft
    from lama_fast.kernels import spectral as ks


def _on(t, dtype):
    return None if t is None else t.to(device=DEVICE, dtype=dtype)


# --- each kernel, float32 --------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
def test_conv1x1_in_float32(shape, layout):
    n, c, h, w = shape
    p = spectral_weights(c, seed=1)
    x = rand(n, 2 * c, h, w, seed=2)
    xin = _on(x, torch.float32)
    if layout == "channels_last":
        xin = xin.contiguous(memory_format=torch.channels_last)
    got = ks.conv1x1_in(xin, _on(p["w1"], torch.float32), _on(p["b1"], torch.float32))
    want = torch.relu(torch.einsum("oi,nihw->nohw", p["w1"], x) + p["b1"].view(1, -1, 1, 1))
    assert got.dtype == torch.float32 and got.is_contiguous() and got.shape == want.shape
    assert scaled_error(got.cpu(), want) <= FLOAT32_TOL


@pytest.mark.parametrize("shape", SHAPES)
def test_frequency_mix_float32_reads_the_spectrum_in_place(shape):
    n, c, h, w = shape
    p = spectral_weights(c, seed=3)
    spectrum = torch.complex(rand(n, c, h, w // 2 + 1, seed=4), rand(n, c, h, w // 2 + 1, seed=5))
    out = torch.full((n, c, h, w // 2 + 1), complex(float("nan"), float("nan")), dtype=torch.complex64,
                     device=DEVICE)
    got = ks.frequency_mix(spectrum.to(device=DEVICE, dtype=torch.complex64), _on(p["w_freq"], torch.float32),
                           _on(p["b_freq"], torch.float32), out=out)
    # The reference's layout: channel 2c = Re(c), 2c + 1 = Im(c).
    interleaved = torch.view_as_real(spectrum).permute(0, 1, 4, 2, 3).reshape(n, 2 * c, h, -1)
    mixed = torch.relu(torch.einsum("oi,nihw->nohw", p["w_freq"], interleaved) + p["b_freq"].view(1, -1, 1, 1))
    want = torch.view_as_real(torch.complex(*mixed.view(n, c, 2, h, -1).unbind(2)))
    assert got is out and not torch.isnan(torch.view_as_real(got)).any()
    assert scaled_error(torch.view_as_real(got).cpu(), want) <= FLOAT32_TOL


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("extras", ["none", "bias+relu", "other", "bias+other+relu"])
def test_conv1x1_out_float32(shape, extras):
    n, c, h, w = shape
    p = spectral_weights(c, seed=6)
    y, u = rand(n, c, h, w, seed=7), rand(n, c, h, w, seed=8)
    bias = rand(2 * c, seed=9) if "bias" in extras else None
    other = rand(n, 2 * c, h, w, seed=10) if "other" in extras else None
    relu = "relu" in extras
    got = ks.conv1x1_out(_on(y, torch.float32), _on(u, torch.float32), _on(p["w2"], torch.float32),
                         _on(bias, torch.float32),
                         None if other is None else _on(other, torch.float32).contiguous(
                             memory_format=torch.channels_last), relu, torch.float32)
    want = torch.einsum("oi,nihw->nohw", p["w2"], y + u)
    want = want + (0 if bias is None else bias.view(1, -1, 1, 1)) + (0 if other is None else other)
    want = torch.relu(want) if relu else want
    assert got.is_contiguous(memory_format=torch.channels_last)
    assert scaled_error(got.cpu(), want) <= FLOAT32_TOL


@pytest.mark.parametrize("shape", [(1, 6, 12, 20), (2, 6, 7, 9), (1, 3, 8, 8)])
@pytest.mark.parametrize("norm", NORMS)
def test_dft_matrices_match_the_fft(shape, norm):
    n, c, h, w = shape
    y = rand(n, c, h, w, seed=11)
    spectrum = dft.rfft2_by_dft(_on(y, torch.float32).contiguous(), norm)
    want = torch.fft.rfft2(y, norm=norm)
    assert scaled_error(torch.view_as_real(spectrum).cpu(), torch.view_as_real(want)) <= FLOAT32_TOL
    # A spectrum that is not Hermitian in its DC and Nyquist columns: c2r keeps their real parts only.
    z = torch.complex(rand(n, c, h, w // 2 + 1, seed=12), rand(n, c, h, w // 2 + 1, seed=13))
    back = dft.irfft2_by_dft(z.to(device=DEVICE, dtype=torch.complex64), w, norm)
    assert scaled_error(back.cpu(), torch.fft.irfft2(z, s=(h, w), norm=norm)) <= FLOAT32_TOL


@pytest.mark.parametrize("shape", [(1, 3, 8, 10), (2, 2, 7, 9), (1, 2, 12, 20), (1, 1, 1, 6)])
def test_hermitian_edges_keep_the_c2r_definition(shape):
    """Symmetrising the DC and Nyquist columns changes nothing for a c2r that follows the definition
    (pocketfft), and makes those columns Hermitian, which every c2r implementation reads alike."""
    n, c, h, w = shape
    z = torch.complex(rand(n, c, h, w // 2 + 1, seed=26), rand(n, c, h, w // 2 + 1, seed=27))
    got = ks.hermitian_edges_(z.to(device=DEVICE, dtype=torch.complex64), w).cpu().to(torch.complex128)
    mirrored = torch.roll(torch.flip(got, dims=(-2,)), shifts=1, dims=-2)
    columns = [0] + ([w // 2] if w % 2 == 0 else [])
    for col in columns:
        assert torch.allclose(got[..., col], mirrored[..., col].conj(), atol=1e-6)
    others = [k for k in range(w // 2 + 1) if k not in columns]
    assert torch.equal(got[..., others], z[..., others].to(torch.complex64).to(torch.complex128))
    assert scaled_error(torch.fft.irfft2(got, s=(h, w)), torch.fft.irfft2(z, s=(h, w))) <= FLOAT32_TOL


@GPU_ONLY
@pytest.mark.parametrize("side", [64, 128, 256])
def test_cufft_path_matches_the_cpu_definition(side):
    """At 128 and 256 cuFFT's c2r reads a non-Hermitian DC column unlike the CPU's FFT (measured on an
    H100: the reference module's float32 output then differs from float64 by 0.47 scaled); with the
    columns symmetrised the op must match the float64 CPU truth at every size."""
    p = spectral_weights(24, seed=5, cin=48, cout=48)
    x = rand(1, 48, side, side, seed=6)
    got = torch.ops.lama_fast.triton_spectral_transform(*_op_args(p, x, torch.float32), False, "ortho", "fft")
    assert scaled_error(got.cpu(), spectral_transform_reference(x, *p.values())) <= FLOAT32_TOL


# --- the whole op ------------------------------------------------------------------------------

def _op_case(shape, seed):
    """Float64 weights, input, bias and other of the op for an (N, Ch, H, W) shape (Cin = Cout = 2 Ch)."""
    n, c, h, w = shape
    return (spectral_weights(c, seed=seed), rand(n, 2 * c, h, w, seed=seed + 1), rand(2 * c, seed=seed + 2),
            rand(n, 2 * c, h, w, seed=seed + 3))


def _op_args(p, x, dtype, bias=None, other=None):
    return (_on(x, dtype).contiguous(memory_format=torch.channels_last), _on(p["w1"], dtype), _on(p["b1"], dtype),
            _on(p["w_freq"], dtype), _on(p["b_freq"], dtype), _on(p["w2"], dtype), _on(bias, dtype),
            None if other is None else _on(other, dtype).contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("route", ["fft", "dft", "dft-tc"])
@pytest.mark.parametrize("norm", NORMS)
def test_spectral_transform_op_float32(shape, route, norm):
    p, x, bias, other = _op_case(shape, seed=14)
    got = torch.ops.lama_fast.triton_spectral_transform(*_op_args(p, x, torch.float32, bias, other), True, norm,
                                                        route)
    want = spectral_transform_reference(x, *p.values(), bias, other, True, norm)
    assert got.dtype == torch.float32 and got.is_contiguous(memory_format=torch.channels_last)
    assert want.std() > 0.1
    assert scaled_error(got.cpu(), want) <= FLOAT32_TOL


@pytest.mark.parametrize("shape", [(1, 6, 12, 20), (2, 12, 7, 9)])
def test_spectral_transform_op_3xtf32(shape):
    """The opt-in float32 mode whose dots are three TF32 tensor-core products (split operands)."""
    p, x, _, other = _op_case(shape, seed=23)
    got = torch.ops.lama_fast.triton_spectral_transform(*_op_args(p, x, torch.float32, None, other), True, "ortho",
                                                        "fft", "tf32x3")
    want = spectral_transform_reference(x, *p.values(), None, other, True)
    assert scaled_error(got.cpu(), want) <= FLOAT32_TOL


@pytest.mark.parametrize("route", ["fft", "dft", "dft-tc"])
def test_fourier_unit_op_float32(route):
    p = spectral_weights(6, seed=18)
    y = torch.relu(rand(2, 6, 7, 9, seed=19))
    got = torch.ops.lama_fast.triton_fourier_unit(_on(y, torch.float32), _on(p["w_freq"], torch.float32),
                                                  _on(p["b_freq"], torch.float32), "ortho", route)
    want = fourier_unit_reference(y, p["w_freq"], p["b_freq"])
    assert scaled_error(got.cpu(), want) <= FLOAT32_TOL


def test_golden_spectral_case(golden_case):
    """The golden SpectralTransform (96 channels, 24x40, batch 2), folded as optimize() folds it."""
    from lama_fast.rewrite import fold_spectral

    case = golden_case("spectral_case")
    module = SpectralTransform(96, 96, enable_lfu=False)
    module.load_state_dict(case["state_dict"], strict=True)
    fused = fold_spectral(module.eval(), None, "spectral_case")
    args = [_on(t, torch.float32) for t in (fused.w1, fused.b1, fused.w_freq, fused.b_freq, fused.w2)]
    got = torch.ops.lama_fast.triton_spectral_transform(_on(case["input"], torch.float32), *args, None, None,
                                                        False, "ortho")
    assert scaled_error(got.cpu(), case["output"]) <= FLOAT32_TOL


# --- half precision: at most twice plain PyTorch's own error ------------------------------------

@pytest.mark.parametrize("dtype", HALF_DTYPES)
@pytest.mark.parametrize("shape", [(1, 6, 12, 20), (2, 12, 7, 9)])
@pytest.mark.parametrize("route", ["fft", "dft", "dft-tc"])
def test_spectral_transform_half_precision(dtype, shape, route):
    p, x, _, other = _op_case(shape, seed=20)
    truth = spectral_transform_reference(x, *p.values(), None, other, True)
    # Plain PyTorch in ``dtype``, with the FFT in float32 (it has no bfloat16 FFT), on the same device.
    half = {k: _on(v, dtype) for k, v in p.items()}
    torch_out = plain_spectral_transform(_on(x, dtype), *half.values(), None, _on(other, dtype), True,
                                        fft_dtype=torch.float32)
    got = torch.ops.lama_fast.triton_spectral_transform(*_op_args(p, x, dtype, None, other), True, "ortho", route)
    assert got.dtype == dtype
    torch_error = scaled_error(torch_out.cpu(), truth)
    floor = {torch.float16: 1e-3, torch.bfloat16: 8e-3}[dtype]
    assert scaled_error(got.cpu(), truth) <= 2 * torch_error + floor * 0.1
    assert torch_error < floor * 10


def test_precision_is_recorded():
    recorded = ks.precision_of(torch.float32, 64, 64, "fft")
    assert recorded["fft"].startswith("float32 cuFFT (torch.fft)")
    assert {k: v for k, v in recorded.items() if k != "fft"} == {
        "conv1": "float32 (ieee, no TF32)", "frequency_mix": "float32 (ieee, no TF32)",
        "conv2": "float32 (ieee, no TF32)", "intermediates": "float32", "output": "float32"}
    assert ks.precision_of(torch.float32, 64, 64, "fft", "tf32x3")["conv2"].startswith("float32 as 3xTF32")
    assert ks.precision_of(torch.bfloat16, 8, 8, "dft")["fft"] == "float32 DFT matrices (ieee dots)"
    assert ks.precision_of(torch.bfloat16, 8, 8, "dft")["conv1"] == "bfloat16 x bfloat16 -> float32"
    assert ks.precision_of(torch.bfloat16, 8, 8, "dft-tc")["fft"] == (
        "DFT matrices on tensor cores (bfloat16 x bfloat16 -> float32)")
    assert ks.precision_of(torch.float32, 8, 8, "dft-tc")["fft"] == (
        "DFT matrices on tensor cores (float32 as 3xTF32 (split operands, tensor cores))")
    assert ks.choose_route(8, 8, "auto") == "fft"  # dft-tc only when asked for


def test_op_refuses_bad_input():
    p = spectral_weights(6, seed=1)
    x = rand(1, 12, 7, 9)
    with pytest.raises(ValueError, match="triton kernels run in float32, float16 or bfloat16"):
        torch.ops.lama_fast.triton_spectral_transform(*_op_args(p, x, torch.float64), False, "ortho")
    args = list(_op_args(p, x, torch.float32))
    args[1] = args[1].double()
    with pytest.raises(ValueError, match="w1 must have the dtype of x"):
        torch.ops.lama_fast.triton_spectral_transform(*args, False, "ortho")
    with pytest.raises(ValueError, match="fft_norm must be one of"):
        torch.ops.lama_fast.triton_spectral_transform(*_op_args(p, x, torch.float32), False, "unit")


def test_op_registration_and_fake_kernel():
    p = spectral_weights(6, seed=1)
    args = _op_args(p, rand(1, 12, 7, 9), torch.float32, None, rand(1, 12, 7, 9))
    torch.library.opcheck(torch.ops.lama_fast.triton_spectral_transform.default, (*args, True, "ortho", "auto"),
                          test_utils=("test_schema", "test_faketensor"))


# --- the whole model ----------------------------------------------------------------------------

def test_backend_reasons():
    reasons = available_backends(DEVICE, torch.float32)
    assert reasons["triton"] is None
    assert "float32, bfloat16 or float16; got torch.float64" in available_backends(DEVICE, torch.float64)["triton"]
    if not ON_GPU:
        # Under the interpreter the backend runs when named, but auto keeps the cpu backend.
        assert lama_fast.optimize(build_generator(tiny_config())).lama_fast_backend != "triton"


def test_generator_matches_golden(golden_dir, golden_case):
    case = golden_case("inpaint_case")
    fast = lama_fast.optimize(golden_generator(golden_dir, torch.float32), backend="triton", device=DEVICE)
    assert fast.lama_fast_backend == "triton"
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        out = fast(golden_batch(case, torch.float32).to(DEVICE))
    assert out.dtype == torch.float32
    assert (out.double().cpu() - case["generator_output"]).abs().max().item() <= 2e-6


def test_unsupported_layers_are_refused():
    generator = build_generator(tiny_config(resnet_conv_kwargs={"ratio_gin": 0.75, "ratio_gout": 0.75,
                                                                 "enable_lfu": True}))
    with pytest.raises(UnsupportedModelError, match="local Fourier unit"):
        lama_fast.optimize(generator, backend="triton", device=DEVICE)


# --- GPU only ------------------------------------------------------------------------------------

@GPU_ONLY
def test_torch_compile_traces_through_the_op():
    p = spectral_weights(12, seed=2)
    args = _op_args(p, rand(1, 24, 16, 24), torch.float32)

    def f(*a):
        return torch.ops.lama_fast.triton_spectral_transform(*a, True, "ortho") * 2

    compiled = torch.compile(f, fullgraph=True)
    assert scaled_error(compiled(*args), f(*args)) <= FLOAT32_TOL


@GPU_ONLY
@pytest.mark.parametrize("size", [32, 64])
def test_big_lama_shapes_float32(size):
    p = spectral_weights(192, seed=3, cin=384, cout=384)
    x = rand(1, 384, size, size, seed=4)
    got = torch.ops.lama_fast.triton_spectral_transform(*_op_args(p, x, torch.float32), False, "ortho")
    want = spectral_transform_reference(x, *p.values())
    assert scaled_error(got.cpu(), want) <= FLOAT32_TOL
