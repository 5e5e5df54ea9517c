"""The CUDA extension of the spectral transform (csrc/cuda) on every machine, and on a GPU when there is one.

* On the CPU: the ops ``lama_fast::cuda_emulated_*`` (csrc/cpu/cuda_emulation.cpp) run the CUDA
  pipeline (csrc/cuda/pipeline.h) with the kernels' own per-element functions
  (csrc/cuda/spectral_device.h) and ATen's FFT addressed like the cuFFT plans, so the GPU's index
  arithmetic, scale folding and Hermitian edge columns are checked against float64 references here.
* Every ``csrc/cuda/*.cu`` compiles with nvcc for sm_80 and sm_90 with torch's half-precision flags,
  when nvcc and a ``cufft.h`` (``pip install nvidia-cufft``, done by ``make venv`` where nvcc is) exist.
* With a GPU and a CUDA build of the extension: the CUDA ops, the ``cuda`` backend, its CUDA graphs.

Truth is lama_fast.ops.reference. Tolerances are those of tests/test_triton.py: float32 within 1e-5
(scaled error) of float64, half precision within twice the error of plain PyTorch in that dtype with its
FFT in float32.
"""

from __future__ import annotations

import concurrent.futures
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pytest
import torch

import lama_fast
import lama_fast.ops.emulation  # noqa: F401  (the emulated ops' fake kernels)
from lama_fast._build import extension_reasons
from lama_fast.backends.cuda import cuda_kernels_reasons
from lama_fast.ops.reference import (fourier_unit_reference, mixed_spectrum_reference, plain_fourier_unit,
                                     plain_spectral_transform, spectral_transform_reference)
from configs import tiny_config
from op_cases import check_output, rand, shape_id, spectral_weights
from model_cases import golden_batch, golden_generator, randomise, scaled_error

ROOT = Path(__file__).resolve().parents[1]
CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))
NORMS = ("ortho", "forward", "backward")
FLOAT32_TOL = 1e-5
FLOAT64_TOL = 1e-12
TOLERANCE = {torch.float64: FLOAT64_TOL, torch.float32: FLOAT32_TOL}
HALF_DTYPES = (torch.float16, torch.bfloat16)
# Half precision: error <= 2 * plain PyTorch's + FLOOR / 10, and PyTorch's own error below 10 * FLOOR.
HALF_FLOOR = {torch.float16: 1e-3, torch.bfloat16: 8e-3}
# (N, Cin, Ch, Cout, H, W): odd and even sides, 1-point and 2-point axes, Cout != Cin.
SHAPES = [(1, 12, 6, 12, 12, 20), (2, 24, 12, 24, 7, 9), (2, 7, 6, 5, 8, 8), (1, 12, 6, 12, 1, 1),
          (2, 12, 12, 9, 2, 7)]
# (bias, other, relu, channels_last input)
VARIANTS = [(False, False, False, False), (True, True, True, True), (True, False, False, True),
            (False, True, True, False)]

EXTENSION_REASONS = extension_reasons()
NEEDS_EXTENSION = pytest.mark.skipif(bool(EXTENSION_REASONS),
                                     reason=f"lama_fast._C is not available: {'; '.join(EXTENSION_REASONS)}")
CUDA_REASONS = (["torch sees no CUDA GPU"] if not torch.cuda.is_available() else []) + cuda_kernels_reasons()
NEEDS_GPU = pytest.mark.skipif(bool(CUDA_REASONS), reason="needs a CUDA GPU and the CUDA kernels of lama_fast._C "
                                                          f"({'; '.join(CUDA_REASONS)})")


def _st_args(p, x, dtype, bias=None, other=None, channels_last=True, device="cpu"):
    """The op's tensor arguments from float64 weights and inputs, in ``dtype`` on ``device``."""
    def on(t):
        return None if t is None else t.to(device=device, dtype=dtype)

    xin = on(x)
    if channels_last:
        xin = xin.contiguous(memory_format=torch.channels_last)
    return (xin, on(p["w1"]), on(p["b1"]), on(p["w_freq"]), on(p["b_freq"]), on(p["w2"]), on(bias), on(other))


def _variant_cases(shape):
    """(variant, case) for every VARIANTS entry of a SHAPES entry."""
    h, w = shape[4:]
    return [(variant, _case(shape, seed=10 * i + h * w, variant=variant)) for i, variant in enumerate(VARIANTS)]


def _case(shape, seed, variant=(True, True, True, True)):
    """Float64 weights, input, bias and other for a SHAPES entry."""
    n, cin, ch, cout, h, w = shape
    use_bias, use_other, relu, channels_last = variant
    p = spectral_weights(ch, seed=seed, cin=cin, cout=cout)
    x = rand(n, cin, h, w, seed=seed + 1)
    bias = rand(cout, seed=seed + 2) if use_bias else None
    other = rand(n, cout, h, w, seed=seed + 3) if use_other else None
    return p, x, bias, other, relu, channels_last


def _half_bound(dtype, x, p, bias, other, relu, norm, truth):
    """(2 * plain PyTorch's error + FLOOR / 10, plain PyTorch's error): ``dtype`` math, float32 FFT, on the CPU."""
    half = {k: v.to(dtype) for k, v in p.items()}
    torch_out = plain_spectral_transform(x.to(dtype), *half.values(), None if bias is None else bias.to(dtype),
                                         None if other is None else other.to(dtype), relu, norm, torch.float32)
    torch_error = scaled_error(torch_out, truth)
    return 2 * torch_error + HALF_FLOOR[dtype] * 0.1, torch_error


# --- the CUDA pipeline emulated on the CPU ------------------------------------------------------

@NEEDS_EXTENSION
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_emulated_spectral_transform(dtype, shape, norm):
    n, _, _, cout, h, w = shape
    for variant, (p, x, bias, other, relu, channels_last) in _variant_cases(shape):
        got = torch.ops.lama_fast.cuda_emulated_spectral_transform(
            *_st_args(p, x, dtype, bias, other, channels_last), relu, norm)
        want = spectral_transform_reference(x, *p.values(), bias, other, relu, norm)
        check_output(got, (n, cout, h, w), dtype)
        assert want.abs().max() > 0.5, variant
        assert scaled_error(got, want) <= TOLERANCE[dtype], variant


def _channel_slice(t, before, after, seed):
    """``t`` as channels [before, before + C) of a wider channels-last tensor on t's device (how the GPU
    generator hands the op an FFC layer's global half): its rows lie further apart than its channel count."""
    n, c, h, w = t.shape
    wide = rand(n, before + c + after, h, w, seed=seed).to(device=t.device, dtype=t.dtype).contiguous(
        memory_format=torch.channels_last)
    wide[:, before:before + c] = t
    view = wide[:, before:before + c]
    assert not view.is_contiguous(memory_format=torch.channels_last) and view.stride(1) == 1
    return view


@NEEDS_EXTENSION
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_emulated_spectral_transform_reads_channel_slices_in_place(dtype):
    shape = (2, 12, 6, 10, 7, 9)
    p, x, bias, other, relu, _ = _case(shape, seed=3)
    args = list(_st_args(p, x, dtype, bias, other, True))
    args[0] = _channel_slice(args[0], 4, 3, seed=11)
    args[7] = _channel_slice(args[7], 5, 0, seed=12)
    got = torch.ops.lama_fast.cuda_emulated_spectral_transform(*args, relu, "ortho")
    dense = torch.ops.lama_fast.cuda_emulated_spectral_transform(
        *_st_args(p, x, dtype, bias, other, True), relu, "ortho")
    check_output(got, (2, 10, 7, 9), dtype)
    # Not bitwise: the GEMMs may block differently over rows further apart.
    assert scaled_error(got.double(), dense.double()) <= TOLERANCE.get(dtype, HALF_FLOOR.get(dtype))
    if dtype != torch.bfloat16:
        want = spectral_transform_reference(x, *p.values(), bias, other, relu, "ortho")
        assert scaled_error(got, want) <= TOLERANCE[dtype]


@NEEDS_EXTENSION
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
def test_emulated_spectral_transform_half_precision(dtype, shape, norm):
    n, _, _, cout, h, w = shape
    p, x, bias, other, relu, _ = _case(shape, seed=7 + h + w)
    got = torch.ops.lama_fast.cuda_emulated_spectral_transform(*_st_args(p, x, dtype, bias, other), relu, norm)
    truth = spectral_transform_reference(x, *p.values(), bias, other, relu, norm)
    bound, torch_error = _half_bound(dtype, x, p, bias, other, relu, norm, truth)
    check_output(got, (n, cout, h, w), dtype)
    assert torch_error < HALF_FLOOR[dtype] * 10
    assert scaled_error(got, truth) <= bound


@NEEDS_EXTENSION
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_emulated_fourier_unit(shape, norm):
    n, _, ch, _, h, w = shape
    p = spectral_weights(ch, seed=h + 3 * w)
    y = torch.relu(rand(n, ch, h, w, seed=h * w + 1))
    want = fourier_unit_reference(y, p["w_freq"], p["b_freq"], norm)
    assert want.abs().max() > 0.1
    for dtype in (torch.float64, torch.float32):
        for yin in (y.to(dtype), y.to(dtype).contiguous(memory_format=torch.channels_last)):
            got = torch.ops.lama_fast.cuda_emulated_fourier_unit(yin, p["w_freq"].to(dtype), p["b_freq"].to(dtype),
                                                                 norm)
            check_output(got, y.shape, dtype)
            assert scaled_error(got, want) <= TOLERANCE[dtype], (dtype, yin.is_contiguous())


@NEEDS_EXTENSION
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("norm", NORMS)
def test_emulated_fourier_unit_half_precision(norm, dtype):
    """Half precision against float64, bounded by twice PyTorch's error with everything but the
    input and output in float32 (a stricter baseline than the op's half-precision mixing GEMM,
    hence the larger floor)."""
    p = spectral_weights(12, seed=31)
    y = torch.relu(rand(2, 12, 7, 10, seed=32)).to(dtype)
    w_freq, b_freq = p["w_freq"].to(dtype), p["b_freq"].to(dtype)
    truth = fourier_unit_reference(y.double(), w_freq.double(), b_freq.double(), norm)
    torch_out = plain_fourier_unit(y.float(), w_freq.float(), b_freq.float(), norm).to(dtype)
    got = torch.ops.lama_fast.cuda_emulated_fourier_unit(y, w_freq, b_freq, norm)
    check_output(got, y.shape, dtype)
    assert scaled_error(got, truth) <= 2 * scaled_error(torch_out, truth) + HALF_FLOOR[dtype]


@NEEDS_EXTENSION
def test_emulated_ops_take_an_empty_batch():
    p, x, bias, other, relu, _ = _case((1, 12, 6, 5, 3, 4), seed=3)
    out = torch.ops.lama_fast.cuda_emulated_spectral_transform(
        *_st_args(p, x[:0], torch.float32, bias, other[:0]), relu, "ortho")
    check_output(out, (0, 5, 3, 4), torch.float32)
    fu = torch.ops.lama_fast.cuda_emulated_fourier_unit(torch.zeros(0, 6, 3, 4), p["w_freq"].float(),
                                                        p["b_freq"].float(), "ortho")
    check_output(fu, (0, 6, 3, 4), torch.float32)


@NEEDS_EXTENSION
def test_emulated_ops_fake_kernels():
    """The fake kernels of lama_fast.ops.emulation agree with the emulated ops (shapes, dtypes, strides)."""
    p, x, bias, other, relu, _ = _case((2, 12, 6, 5, 3, 4), seed=3)
    args = _st_args(p, x, torch.float32, bias, other)
    checks = ("test_schema", "test_faketensor")
    torch.library.opcheck(torch.ops.lama_fast.cuda_emulated_spectral_transform.default, (*args, relu, "ortho"),
                          test_utils=checks)
    for op in (torch.ops.lama_fast.cuda_emulated_fourier_unit, torch.ops.lama_fast.cuda_emulated_mixed_spectrum):
        for dtype in (torch.float32, torch.float64):
            y = rand(2, 6, 3, 4, seed=4).to(dtype)
            torch.library.opcheck(op.default, (y, p["w_freq"].to(dtype), p["b_freq"].to(dtype), "forward"),
                                  test_utils=checks)


# --- the spectrum the inverse FFT reads: Hermitian DC and Nyquist columns ----------------------

def _mirror_rows(z):
    """z[:, (H - h) % H] for every row h of an (N, H, Wf, C) array."""
    return torch.roll(torch.flip(z, dims=(1,)), shifts=1, dims=1)


@NEEDS_EXTENSION
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("hw", [(8, 10), (7, 9), (8, 9), (7, 10), (1, 6), (2, 2), (1, 1), (6, 1)],
                         ids=shape_id)
def test_mixed_spectrum_has_hermitian_edge_columns(hw, norm):
    h, w = hw
    wf = w // 2 + 1
    edges = [0] + ([w // 2] if w % 2 == 0 else [])
    inner = [k for k in range(wf) if k not in edges]
    p = spectral_weights(6, seed=h * w + 5)
    y = torch.relu(rand(2, 6, h, w, seed=h + w))
    want = mixed_spectrum_reference(y, p["w_freq"], p["b_freq"], norm)
    hermitian = (want + _mirror_rows(want).conj()) / 2
    # The ReLU makes the formula's edge columns non-Hermitian wherever there are rows to mirror.
    if h > 2:
        assert (want[:, :, edges] - hermitian[:, :, edges]).abs().max() > 1e-3
    for dtype, complex_dtype in ((torch.float64, torch.complex128), (torch.float32, torch.complex64),
                                 (torch.bfloat16, torch.complex64)):
        z = torch.ops.lama_fast.cuda_emulated_mixed_spectrum(y.to(dtype), p["w_freq"].to(dtype),
                                                             p["b_freq"].to(dtype), norm)
        assert z.dtype == complex_dtype and z.shape == (2, h, wf, 6)
        edge, mirrored = z[:, :, edges], _mirror_rows(z)[:, :, edges]
        # Bitwise: X[h] == conj(X[(H - h) % H]), so the DC row (and row H/2) is real.
        assert torch.equal(edge.real, mirrored.real) and torch.equal(edge.imag, -mirrored.imag), dtype
        if dtype == torch.bfloat16:
            continue
        tol = TOLERANCE[dtype]
        scale = want.abs().max().item()
        assert scale > 0.1
        if inner:
            assert (z[:, :, inner].to(torch.complex128) - want[:, :, inner]).abs().max().item() <= tol * scale
        assert (edge.to(torch.complex128) - hermitian[:, :, edges]).abs().max().item() <= tol * scale


# --- bad input: the messages of csrc/spectral_args.h -------------------------------------------

def _error_cases() -> List[Tuple[str, object, str]]:
    st, fu, ms = ("cuda_emulated_spectral_transform", "cuda_emulated_fourier_unit", "cuda_emulated_mixed_spectrum")
    p = {k: v.float() for k, v in spectral_weights(6, seed=1).items()}
    x = rand(2, 12, 7, 9).float()

    def spectral(**changes):
        a = dict(x=x, **p, bias=None, other=None, relu=False, fft_norm="ortho")
        a.update(changes)
        return lambda: torch.ops.lama_fast.cuda_emulated_spectral_transform(*a.values())

    def unit(op, **changes):
        a = dict(x=x[:, :6], w_freq=p["w_freq"], b_freq=p["b_freq"], fft_norm="ortho")
        a.update(changes)
        return lambda: getattr(torch.ops.lama_fast, op)(*a.values())

    return [
        ("int32", spectral(x=x.to(torch.int32)),
         f"{st}: x must have dtype torch.float32, torch.float64, torch.float16 or torch.bfloat16, got torch.int32"),
        ("2d", spectral(x=torch.zeros(2, 3)), f"{st}: x must be a 4-D (N, C, H, W) tensor, got shape [2, 3]"),
        ("empty", spectral(x=torch.zeros(1, 12, 0, 3)),
         f"{st}: x must have at least one channel, row and column, got shape [1, 12, 0, 3]"),
        ("w1", spectral(w1=p["w1"][:, :5]),
         f"{st}: w1 must have shape [Ch, 12] (Ch, Cin where Cin = 12 channels of x), got [6, 5]"),
        ("w_freq", spectral(w_freq=torch.zeros(6, 6)),
         f"{st}: w_freq must have shape [12, 12] (2*Ch, 2*Ch where Ch = 6 from w1), got [6, 6]"),
        ("b_freq", spectral(b_freq=torch.zeros(6)),
         f"{st}: b_freq must have shape [12] (2*Ch where Ch = 6 from w1), got [6]"),
        ("w2", spectral(w2=p["w2"][:, :5]),
         f"{st}: w2 must have shape [Cout, 6] (Cout, Ch where Ch = 6 from w1), got [12, 5]"),
        ("bias", spectral(bias=torch.zeros(5)),
         f"{st}: bias must have shape [12] (Cout where Cout = 12 from w2), got [5]"),
        ("other", spectral(other=torch.zeros(2, 12, 7, 8)),
         f"{st}: other must have shape [2, 12, 7, 9] (N, Cout, H, W of the output), got [2, 12, 7, 8]"),
        ("b1-dtype", spectral(b1=p["b1"].double()),
         f"{st}: b1 must have the dtype of x (torch.float32), got torch.float64"),
        ("other-dtype", spectral(other=torch.zeros(2, 12, 7, 9, dtype=torch.bfloat16)),
         f"{st}: other must have the dtype of x (torch.float32), got torch.bfloat16"),
        ("norm", spectral(fft_norm="bogus"),
         f'{st}: fft_norm must be "ortho", "forward" or "backward", got "bogus"'),
        ("fu-w_freq", unit(fu, x=x),
         f"{fu}: w_freq must have shape [24, 24] (2*C, 2*C where C = 12 channels of x), got [12, 12]"),
        ("fu-norm", unit(fu, fft_norm="unit"), f'{fu}: fft_norm must be "ortho", "forward" or "backward", got "unit"'),
        ("fu-dtype", unit(fu, w_freq=p["w_freq"].half()),
         f"{fu}: w_freq must have the dtype of x (torch.float32), got torch.float16"),
        ("ms-b_freq", unit(ms, b_freq=p["b_freq"][:5]),
         f"{ms}: b_freq must have shape [12] (2*C where C = 6 channels of x), got [5]"),
        ("ms-3d", unit(ms, x=x[0]), f"{ms}: x must be a 4-D (N, C, H, W) tensor, got shape [12, 7, 9]"),
    ]


@NEEDS_EXTENSION
@pytest.mark.parametrize("case", range(len(_error_cases())), ids=[c[0] for c in _error_cases()])
def test_bad_input_messages(case):
    _, call, message = _error_cases()[case]
    with pytest.raises(RuntimeError, match=re.escape(message)):
        call()


# --- nvcc compiles every .cu file ---------------------------------------------------------------

ARCHS = ("sm_80", "sm_90")
# What torch's CUDAExtension adds to every nvcc command line.
TORCH_NVCC_FLAGS = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]


def _cufft_include() -> Optional[str]:
    """A directory with cufft.h: pip's nvidia-cufft (nvidia/*/include on sys.path) or a CUDA toolkit's include."""
    candidates = [inc for entry in sys.path if entry for inc in sorted(glob.glob(os.path.join(entry, "nvidia", "*",
                                                                                            "include")))]
    nvcc = shutil.which("nvcc")
    roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
             os.path.dirname(os.path.dirname(os.path.realpath(nvcc))) if nvcc else None]
    candidates += [os.path.join(root, "include") for root in roots if root]
    return next((c for c in candidates if os.path.isfile(os.path.join(c, "cufft.h"))), None)


def test_there_are_cuda_sources():
    assert [p.name for p in CUDA_SOURCES] and all(p.suffix == ".cu" for p in CUDA_SOURCES)
    assert {"spectral_kernels.cu", "fft_plans.cu"} <= {p.name for p in CUDA_SOURCES}


@pytest.fixture(scope="session")
def nvcc_results(tmp_path_factory) -> Iterator[Dict[Tuple[str, str], "concurrent.futures.Future"]]:
    """Every (file, arch) compile, started at once in parallel; each test waits for its own."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH")
    include = _cufft_include()
    if include is None:
        pytest.skip("no cufft.h found (pip install nvidia-cufft, as make venv does where nvcc is, "
                    "or set CUDA_HOME to a toolkit that has it)")
    out_dir = tmp_path_factory.mktemp("nvcc")

    def compile_one(source: Path, arch: str) -> subprocess.CompletedProcess:
        number = arch.split("_")[1]
        command = [nvcc, "-std=c++17", "-c", str(source), "-o", str(out_dir / f"{source.stem}-{arch}.o"),
                   "-I", str(ROOT / "csrc"), "-I", include, "-gencode", f"arch=compute_{number},code={arch}",
                   *TORCH_NVCC_FLAGS]
        return subprocess.run(command, capture_output=True, text=True, timeout=600)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(len(CUDA_SOURCES) * len(ARCHS),
                                                                        os.cpu_count() or 1)))
    futures = {(source.name, arch): pool.submit(compile_one, source, arch)
               for source in CUDA_SOURCES for arch in ARCHS}
    pool.shutdown(wait=False)
    yield futures
    for future in futures.values():
        future.cancel()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", [p.name for p in CUDA_SOURCES])
def test_cuda_sources_compile_with_nvcc(nvcc_results, source, arch):
    result = nvcc_results[(source, arch)].result()
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"nvcc failed on {source} for {arch}:\n{output}"
    # Warnings about our own code (not the toolkit's headers) count as failures too.
    ours = [line for line in output.splitlines() if "csrc/" in line and "warning" in line.lower()]
    assert not ours, "\n".join(ours)


# --- the cuFFT plan cache (csrc/cuda/fft_plans.cu) on a fake CUDA runtime and cuFFT -------------

# A program linking fft_plans.cu, compiled as plain C++, with fakes of the CUDA runtime and cuFFT calls
# it makes: it runs one scenario (its argument), prints FAIL lines for what went wrong and exits 1 then.
FAKE_CUFFT_PROGRAM = r"""
// csrc/cuda/fft_plans.cu on a fake CUDA runtime and cuFFT: handles are
// numbers, streams are numbers, a stream "captures" when the scenario says so.
#include <cuda_runtime.h>
#include <cufft.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cuda/spectral_cuda.h"

namespace fake {
struct Handle {
  bool alive = true;
  cudaStream_t stream = nullptr;
  void* work = nullptr;
};
std::mutex mutex;
std::map<cufftHandle, Handle> handles;
cufftHandle next_handle = 1;
int makes = 0, destroys = 0, execs = 0, wrong = 0;
std::set<cudaStream_t> capturing;
bool query_fails = false;
thread_local cudaStream_t caller_stream = nullptr;
thread_local void* caller_work = nullptr;

cufftResult exec(cufftHandle h) {
  std::lock_guard<std::mutex> lock(mutex);
  Handle& handle = handles.at(h);
  ++execs;
  // What a launch would capture: the handle's stream and work area now.
  if (!handle.alive || handle.stream != caller_stream || handle.work != caller_work) ++wrong;
  return CUFFT_SUCCESS;
}
}  // namespace fake

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}
cudaError_t cudaGetLastError() { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t) { return "fake error"; }
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  std::lock_guard<std::mutex> lock(fake::mutex);
  if (fake::query_fails) return cudaErrorStreamCaptureImplicit;
  *status = fake::capturing.count(stream) ? cudaStreamCaptureStatusActive : cudaStreamCaptureStatusNone;
  return cudaSuccess;
}
cufftResult cufftCreate(cufftHandle* h) {
  std::lock_guard<std::mutex> lock(fake::mutex);
  *h = fake::next_handle++;
  fake::handles[*h] = fake::Handle();
  return CUFFT_SUCCESS;
}
cufftResult cufftSetAutoAllocation(cufftHandle, int) { return CUFFT_SUCCESS; }
cufftResult cufftMakePlanMany64(cufftHandle, int, long long*, long long*, long long, long long, long long*,
                                long long, long long, cufftType, long long, size_t* work) {
  std::lock_guard<std::mutex> lock(fake::mutex);
  ++fake::makes;
  *work = 256;
  return CUFFT_SUCCESS;
}
cufftResult cufftDestroy(cufftHandle h) {
  std::lock_guard<std::mutex> lock(fake::mutex);
  fake::handles.at(h).alive = false;
  ++fake::destroys;
  return CUFFT_SUCCESS;
}
cufftResult cufftSetStream(cufftHandle h, cudaStream_t stream) {
  {
    std::lock_guard<std::mutex> lock(fake::mutex);
    fake::handles.at(h).stream = stream;
  }
  // Room for another thread to set its own stream before this one launches.
  std::this_thread::sleep_for(std::chrono::microseconds(20));
  return CUFFT_SUCCESS;
}
cufftResult cufftSetWorkArea(cufftHandle h, void* work) {
  std::lock_guard<std::mutex> lock(fake::mutex);
  fake::handles.at(h).work = work;
  return CUFFT_SUCCESS;
}
cufftResult cufftExecR2C(cufftHandle h, cufftReal*, cufftComplex*) { return fake::exec(h); }
cufftResult cufftExecC2R(cufftHandle h, cufftComplex*, cufftReal*) { return fake::exec(h); }
cufftResult cufftExecD2Z(cufftHandle h, cufftDoubleReal*, cufftDoubleComplex*) { return fake::exec(h); }
cufftResult cufftExecZ2D(cufftHandle h, cufftDoubleComplex*, cufftDoubleReal*) { return fake::exec(h); }

namespace {

using namespace lama_fast::cuda;

int failures = 0;

void check(bool ok, const std::string& what) {
  if (!ok) {
    std::printf("FAIL: %s\n", what.c_str());
    ++failures;
  }
}

cudaStream_t stream(std::uintptr_t n) { return reinterpret_cast<cudaStream_t>(n); }

FftKey key(int64_t channels, int64_t height, int64_t width, bool inverse = false) {
  FftKey k;
  k.channels = channels;
  k.height = height;
  k.width = width;
  k.inverse = inverse;
  return k;
}

// A work area of its own per call, which fake::exec expects on the plan.
void* allocate(std::size_t bytes, void*) {
  thread_local std::vector<std::vector<char>> areas;
  areas.emplace_back(bytes);
  fake::caller_work = areas.back().data();
  return fake::caller_work;
}

std::string run(const FftKey& k, cudaStream_t s) {
  fake::caller_stream = s;
  float data = 0;
  return fft_exec(k, &data, &data, &allocate, nullptr, s);
}

void set_capturing(cudaStream_t s, bool on) {
  std::lock_guard<std::mutex> lock(fake::mutex);
  if (on) {
    fake::capturing.insert(s);
  } else {
    fake::capturing.erase(s);
  }
}

bool alive(cufftHandle h) {
  std::lock_guard<std::mutex> lock(fake::mutex);
  return fake::handles.at(h).alive;
}

void check_cache(std::size_t cached, std::size_t pinned, const std::string& when) {
  const FftPlanCache c = fft_plan_cache();
  check(c.cached == cached && c.pinned == pinned, when + ": " + std::to_string(c.cached) + " plans cached, " +
                                                      std::to_string(c.pinned) + " pinned, want " +
                                                      std::to_string(cached) + ", " + std::to_string(pinned));
}

void capture_needs_warm_up() {
  const cudaStream_t s = stream(7);
  set_capturing(s, true);
  const std::string error = run(key(384, 64, 64), s);
  std::printf("message: %s\n", error.c_str());
  check(!error.empty(), "a plan made during capture");
  check(fake::makes == 0 && fake::handles.empty() && fake::execs == 0, "cuFFT called for a refused plan");
  set_capturing(s, false);
  check(run(key(384, 64, 64), s).empty(), "the eager call");
  check_cache(1, 0, "after the eager call");
  set_capturing(s, true);
  check(run(key(384, 64, 64), s).empty(), "the cached plan during capture");
  check(fake::makes == 1 && fake::execs == 2 && fake::wrong == 0, "the captured execution");
  check_cache(1, 1, "after the capture");
}

void query_error() {
  fake::query_fails = true;
  const std::string error = run(key(8, 4, 4), stream(1));
  std::printf("message: %s\n", error.c_str());
  check(!error.empty() && fake::makes == 0 && fake::execs == 0, "a failed capture query");
}

void eviction_keeps_pinned_plans() {
  const cudaStream_t s = stream(3);
  check(fft_set_plan_limit(2).limit == 2, "the limit");
  run(key(8, 4, 4), s);  // handle 1
  set_capturing(s, true);
  run(key(8, 4, 4), s);
  set_capturing(s, false);
  for (int w = 5; w < 10; ++w) {
    check(run(key(8, 4, w), s).empty(), "an eager call");  // handles 2..6
    check_cache(2, 1, "an eager call past the limit");
  }
  check(alive(1) && !alive(2) && !alive(5) && alive(6), "the least recently used unpinned plans destroyed");
  set_capturing(s, true);
  check(run(key(8, 4, 4), s).empty(), "the pinned plan during capture");
  check(run(key(8, 4, 9), s).empty(), "the newest plan during capture");
  set_capturing(s, false);
  check(fake::makes == 6 && fake::wrong == 0, "plans made once and used as they were set");
  check_cache(2, 2, "two pinned plans");
  check(run(key(8, 4, 12), s).empty(), "an eager call with every cached plan pinned");  // handle 7
  check_cache(3, 2, "past the limit when every other plan is pinned");
  const FftPlanCache c = fft_set_plan_limit(0);
  check(c.cached == 2 && c.pinned == 2 && !alive(7), "limit 0 keeps only the pinned plans");
  fft_clear_plans();
  check_cache(2, 2, "clearing keeps the pinned plans");
  check(alive(1) && alive(6), "pinned plans alive");
  check(run(key(8, 4, 13), s).empty() && fake::wrong == 0, "limit 0 keeps the plan just made until it has run");
  check_cache(3, 2, "the plan just made at limit 0");
}

void threads_share_plans() {
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 200; ++i) {
        check(run(key(16, 8, 8, i % 2 == 1), stream(100 + t)).empty(), "a threaded call");
      }
    });
  }
  for (auto& thread : threads) thread.join();
  check(fake::execs == 1600 && fake::makes == 2, "one plan per direction for every thread");
  std::printf("executions with another thread's stream or work area: %d\n", fake::wrong);
  check(fake::wrong == 0, "stream and work area swapped between setting and launching");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string scenario = argc > 1 ? argv[1] : "";
  const std::map<std::string, void (*)()> scenarios = {
      {"capture_needs_warm_up", capture_needs_warm_up},
      {"query_error", query_error},
      {"eviction_keeps_pinned_plans", eviction_keeps_pinned_plans},
      {"threads_share_plans", threads_share_plans},
  };
  const auto found = scenarios.find(scenario);
  if (found == scenarios.end()) {
    std::printf("unknown scenario '%s'\n", scenario.c_str());
    return 2;
  }
  found->second();
  return failures == 0 ? 0 : 1;
}
"""
PLAN_CACHE_SCENARIOS = ("capture_needs_warm_up", "query_error", "eviction_keeps_pinned_plans", "threads_share_plans")


@pytest.fixture(scope="session")
def fake_cufft_program(tmp_path_factory) -> Path:
    """fft_plans.cu linked with the fake runtime and cuFFT above (nvcc as the C++ compiler, no cudart)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not on PATH")
    include = _cufft_include()
    if include is None:
        pytest.skip("no cufft.h found (pip install nvidia-cufft, or set CUDA_HOME to a toolkit that has it)")
    out_dir = tmp_path_factory.mktemp("fake_cufft")
    source = out_dir / "fake_cufft.cpp"
    source.write_text(FAKE_CUFFT_PROGRAM, encoding="utf-8")
    program = out_dir / "fake_cufft"
    command = [nvcc, "-std=c++17", "-cudart", "none", "-x", "c++", str(ROOT / "csrc" / "cuda" / "fft_plans.cu"),
               str(source), "-I", str(ROOT / "csrc"), "-I", include, "-Xcompiler", "-pthread", "-o", str(program)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"the fake-cuFFT program does not build:\n{result.stdout}{result.stderr}"
    return program


@pytest.mark.parametrize("scenario", PLAN_CACHE_SCENARIOS)
def test_plan_cache_on_a_fake_cufft(fake_cufft_program, scenario):
    """A plan missing while the stream captures is refused before any cuFFT call; a plan used during
    capture is pinned through eviction, a lowered limit and clearing; threads sharing a plan each launch
    on their own stream and work area."""
    result = subprocess.run([str(fake_cufft_program), scenario], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    if scenario == "capture_needs_warm_up":
        assert ("message: the cuFFT plan for the r2c (float) of 384 channels of 64x64 on cuda:0 is made on first "
                "use, which cannot happen inside CUDA-graph capture: call the op once with this shape and dtype "
                "before capturing\n") in output
    if scenario == "query_error":
        assert "message: cudaStreamIsCapturing failed: fake error for the r2c (float) of 8 channels of 4x4" in output


# --- on a GPU: the CUDA ops and the cuda backend ------------------------------------------------

@NEEDS_GPU
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_cuda_spectral_transform_float32(ieee_float32, shape, norm):
    n, _, _, cout, h, w = shape
    for variant, (p, x, bias, other, relu, channels_last) in _variant_cases(shape):
        args = _st_args(p, x, torch.float32, bias, other, channels_last, device="cuda")
        got = torch.ops.lama_fast.spectral_transform(*args, relu, norm)
        check_output(got, (n, cout, h, w), torch.float32)
        assert got.is_cuda
        want = spectral_transform_reference(x, *p.values(), bias, other, relu, norm)
        assert scaled_error(got.cpu(), want) <= FLOAT32_TOL, variant
        # The emulation runs the same pipeline on the CPU: the two agree to float32's rounding.
        emulated = torch.ops.lama_fast.cuda_emulated_spectral_transform(
            *_st_args(p, x, torch.float32, bias, other, channels_last), relu, norm)
        assert scaled_error(got.cpu(), emulated) <= FLOAT32_TOL, variant


@NEEDS_GPU
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_cuda_fourier_unit(ieee_float32, dtype, norm):
    p = spectral_weights(12, seed=41)
    for shape in [(1, 12, 12, 20), (2, 12, 7, 9), (1, 12, 1, 1), (2, 12, 8, 2)]:
        y = torch.relu(rand(*shape, seed=42))
        yin = y.to(device="cuda", dtype=dtype)
        got = torch.ops.lama_fast.fourier_unit(yin, p["w_freq"].to(yin), p["b_freq"].to(yin), norm)
        check_output(got, shape, dtype)
        want = fourier_unit_reference(y, p["w_freq"], p["b_freq"], norm)
        assert scaled_error(got.cpu(), want) <= TOLERANCE[dtype], shape
        emulated = torch.ops.lama_fast.cuda_emulated_fourier_unit(y.to(dtype), p["w_freq"].to(dtype),
                                                                  p["b_freq"].to(dtype), norm)
        assert scaled_error(got.cpu(), emulated) <= TOLERANCE[dtype], shape


@NEEDS_GPU
@pytest.mark.parametrize("shape", SHAPES[:3], ids=shape_id)
def test_cuda_spectral_transform_float64(shape):
    p, x, bias, other, relu, _ = _case(shape, seed=51)
    got = torch.ops.lama_fast.spectral_transform(*_st_args(p, x, torch.float64, bias, other, device="cuda"), relu,
                                                 "backward")
    want = spectral_transform_reference(x, *p.values(), bias, other, relu, "backward")
    check_output(got, want.shape, torch.float64)
    assert scaled_error(got.cpu(), want) <= FLOAT64_TOL
    emulated = torch.ops.lama_fast.cuda_emulated_spectral_transform(*_st_args(p, x, torch.float64, bias, other),
                                                                    relu, "backward")
    assert scaled_error(got.cpu(), emulated) <= FLOAT64_TOL


@NEEDS_GPU
@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES[:3] + [(1, 384, 192, 384, 64, 64)], ids=shape_id)
def test_cuda_spectral_transform_half_precision(dtype, shape):
    p, x, bias, other, relu, _ = _case(shape, seed=61)
    got = torch.ops.lama_fast.spectral_transform(*_st_args(p, x, dtype, bias, other, device="cuda"), relu, "ortho")
    check_output(got, (shape[0], shape[3], shape[4], shape[5]), dtype)
    truth = spectral_transform_reference(x, *p.values(), bias, other, relu, "ortho")
    bound, torch_error = _half_bound(dtype, x, p, bias, other, relu, "ortho", truth)
    assert torch_error < HALF_FLOOR[dtype] * 10
    assert scaled_error(got.cpu(), truth) <= bound
    # The same pipeline emulated on the CPU: within one rounding of the dtype of each other.
    emulated = torch.ops.lama_fast.cuda_emulated_spectral_transform(*_st_args(p, x, dtype, bias, other), relu,
                                                                    "ortho")
    assert scaled_error(got.cpu(), emulated) <= 2 * bound


@NEEDS_GPU
@pytest.mark.parametrize("side", [64, 128, 256])
def test_cuda_big_lama_shapes_float32(ieee_float32, side):
    """big-lama's global branch: 384 channels in and out, Ch = 192. At 128 and 256 cuFFT's c2r reads
    non-Hermitian edge columns unlike the definition, so these sizes check the op's symmetrisation."""
    p = spectral_weights(192, seed=3, cin=384, cout=384)
    x = rand(1, 384, side, side, seed=4)
    other = rand(1, 384, side, side, seed=5) if side < 256 else None
    got = torch.ops.lama_fast.spectral_transform(*_st_args(p, x, torch.float32, None, other, device="cuda"),
                                                 True, "ortho")
    want = spectral_transform_reference(x, *p.values(), None, other, True, "ortho")
    check_output(got, want.shape, torch.float32)
    assert scaled_error(got.cpu(), want) <= FLOAT32_TOL
    if side < 256:
        y = torch.relu(rand(1, 192, side, side, seed=6))
        fu = torch.ops.lama_fast.fourier_unit(y.float().cuda(), p["w_freq"].float().cuda(),
                                              p["b_freq"].float().cuda(), "ortho")
        assert scaled_error(fu.cpu(), fourier_unit_reference(y, p["w_freq"], p["b_freq"])) <= FLOAT32_TOL


@NEEDS_GPU
def test_cuda_generator_matches_golden(golden_dir, golden_case, ieee_float32):
    case = golden_case("inpaint_case")
    fast = lama_fast.optimize(golden_generator(golden_dir, torch.float32), backend="cuda", device="cuda")
    assert fast.lama_fast_backend == "cuda"
    out = fast(golden_batch(case, torch.float32).cuda())
    assert out.dtype == torch.float32
    assert (out.double().cpu() - case["generator_output"]).abs().max().item() <= 2e-6


@NEEDS_GPU
def test_cuda_bfloat16_big_lama_on_a_large_photo(tmp_path):
    """A random-weights big-lama, loaded from a bare state dict, inpaints a 1000x750 photo in bfloat16;
    the hole is filled close to the float32 run, the rest is left as it was."""
    from lama_fast.model.random import random_generator

    path = tmp_path / "big-lama.pth"
    torch.save(random_generator("big-lama", seed=0).state_dict(), path)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(750, 1000, 3), dtype=np.uint8)
    mask = np.zeros((750, 1000), dtype=np.uint8)
    mask[200:520, 300:700] = 255
    results = {}
    for dtype in (torch.bfloat16, torch.float32):
        inpainter = lama_fast.load(path, device="cuda", backend="cuda", dtype=dtype)
        assert inpainter.backend == "cuda"
        results[dtype] = inpainter(image, mask, hd_strategy="original")
    got, ref = results[torch.bfloat16], results[torch.float32]
    assert got.shape == image.shape and got.dtype == np.uint8
    hole = mask > 0
    assert np.array_equal(got[~hole], image[~hole])
    filled = got[hole].astype(int)
    assert filled.std() > 1 and not np.array_equal(got[hole], image[hole])
    assert np.abs(filled - ref[hole].astype(int)).mean() <= 2


@NEEDS_GPU
def test_cuda_graphs_give_the_eager_output():
    generator = randomise(lama_fast.model.build_generator(tiny_config()), seed=7).eval()
    eager = lama_fast.optimize(generator, backend="cuda", device="cuda", cuda_graphs=False)
    graphed = lama_fast.optimize(generator, backend="cuda", device="cuda", cuda_graphs=True)
    gen = torch.Generator().manual_seed(8)
    inputs = [torch.rand(1, 4, 64, 88, generator=gen), torch.rand(2, 4, 96, 128, generator=gen)]
    for x in inputs + inputs:  # capture each shape, then replay both
        x = x.cuda()
        want = eager(x)
        got = graphed(x.clone())
        assert got.shape == want.shape and torch.isfinite(got).all()
        assert scaled_error(got.cpu(), want.cpu()) <= 1e-6
    assert getattr(graphed, "graph_error", None) is None


# --- on a GPU: cuFFT plans and CUDA graphs, threads and streams, unaligned GEMM operands --------

def _plan_cache(limit: Optional[int] = None) -> Tuple[int, int, int]:
    """(limit, plans cached, plans pinned) of the CUDA op's cuFFT plan cache, setting the limit first when given."""
    return tuple(torch.ops.lama_fast._cufft_plan_cache_limit(limit))


def _spectral_on(p, x, dtype, bias=None, other=None, relu=True):
    """The CUDA op on float64 weights and inputs moved to the GPU in ``dtype`` (on the current stream)."""
    return torch.ops.lama_fast.spectral_transform(*_st_args(p, x, dtype, bias, other, device="cuda"), relu, "ortho")


def _eager_then_captured(args, relu, stream):
    """The op run eagerly on ``stream`` (making its plans), then captured on it: (eager output, graph, the
    graph's output tensor)."""
    with torch.cuda.stream(stream):
        want = torch.ops.lama_fast.spectral_transform(*args, relu, "ortho")
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        got = torch.ops.lama_fast.spectral_transform(*args, relu, "ortho")
    return want, graph, got


@NEEDS_GPU
def test_cuda_capture_before_the_first_call_names_the_missing_plan(ieee_float32):
    # Shapes no other test uses: their plans are not cached yet.
    p, x, bias, other, relu, _ = _case((1, 8, 10, 8, 11, 13), seed=71)
    args = _st_args(p, x, torch.float32, bias, other, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        # cuBLAS warmed up on the capture stream with the same GEMMs (13x11 positions), other FFT plans.
        _spectral_on(p, rand(1, 8, 13, 11, seed=72), torch.float32, bias, rand(1, 8, 13, 11, seed=73), relu)
    stream.synchronize()
    device = torch.cuda.current_device()
    message = (f"lama_fast CUDA ops: the cuFFT plan for the r2c (float) of 10 channels of 11x13 on cuda:{device} "
               "is made on first use, which cannot happen inside CUDA-graph capture: call the op once with this "
               "shape and dtype before capturing")
    with pytest.raises(RuntimeError, match=re.escape(message)):
        with torch.cuda.graph(torch.cuda.CUDAGraph(), stream=stream):
            torch.ops.lama_fast.spectral_transform(*args, relu, "ortho")
    # One call outside the capture makes the plans; the capture then replays the eager output.
    want, graph, got = _eager_then_captured(args, relu, stream)
    graph.replay()
    torch.cuda.synchronize()
    assert scaled_error(got.cpu(), want.cpu()) <= 1e-6


@NEEDS_GPU
def test_cuda_graph_keeps_its_plans_through_eviction(ieee_float32):
    limit = _plan_cache()[0]
    assert limit >= 1
    p, x, bias, other, relu, _ = _case((1, 8, 12, 8, 9, 14), seed=81)
    args = _st_args(p, x, torch.float32, bias, other, device="cuda")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    want, graph, got = _eager_then_captured(args, relu, stream)
    try:
        _, cached, pinned = _plan_cache(0)  # destroys every plan the captures did not pin
        assert pinned >= 2 and cached == pinned
        # New plans for other shapes take the memory any destroyed plan gave back, then the rest is scribbled on.
        for seed, (c, h, w) in enumerate([(6, 5, 7), (12, 7, 14), (8, 10, 3)]):
            q = spectral_weights(c, seed=82 + seed, cin=8, cout=8)
            _spectral_on(q, rand(1, 8, h, w, seed=90 + seed), torch.float32)
            assert _plan_cache()[1] <= pinned + 1
        scribble = torch.full((1 << 26,), float("nan"), device="cuda")
        got.zero_()
        graph.replay()
        torch.cuda.synchronize()
        del scribble
        assert scaled_error(got.cpu(), want.cpu()) <= 1e-6
    finally:
        assert _plan_cache(limit)[0] == limit


@NEEDS_GPU
def test_cuda_threads_on_their_own_streams_share_plans(ieee_float32):
    """Two threads, each on its own stream, run the same shape (the same cuFFT plans, with work areas of
    their own) on different inputs: every output is the single-threaded one."""
    shape = (1, 64, 32, 64, 48, 40)
    p = spectral_weights(32, seed=91, cin=64, cout=64)
    inputs = [rand(1, 64, 48, 40, seed=92 + i) for i in range(4)]
    want = [_spectral_on(p, x, torch.float32).cpu() for x in inputs]
    torch.cuda.synchronize()
    rounds = 24

    def worker(k: int) -> List[torch.Tensor]:
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            outs = [_spectral_on(p, inputs[(k + i) % len(inputs)], torch.float32) for i in range(rounds)]
        stream.synchronize()
        return [out.cpu() for out in outs]

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(worker, range(2)))
    for k, outs in enumerate(results):
        for i, out in enumerate(outs):
            check_output(out, (shape[0], shape[3], shape[4], shape[5]), torch.float32)
            assert scaled_error(out, want[(k + i) % len(inputs)]) <= 1e-6, (k, i)


@NEEDS_GPU
@pytest.mark.parametrize("blas", ["cublas", "cublaslt"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_spectral_transform_reads_unaligned_channel_slices(ieee_float32, dtype, blas):
    """x and other as channel slices starting 3 and 5 channels into 29-channel tensors: GEMM operands off
    16-byte alignment in start and row stride, under either BLAS library ATen may pick."""
    shape = (2, 24, 16, 24, 12, 10)
    p, x, bias, other, relu, _ = _case(shape, seed=101)
    dense = _st_args(p, x, dtype, bias, other, device="cuda")
    sliced = list(dense)
    sliced[0] = _channel_slice(dense[0], 3, 2, seed=102)
    sliced[7] = _channel_slice(dense[7], 5, 0, seed=103)
    before = torch.backends.cuda.preferred_blas_library()
    try:
        torch.backends.cuda.preferred_blas_library(blas)
        got = torch.ops.lama_fast.spectral_transform(*sliced, relu, "ortho")
        want = torch.ops.lama_fast.spectral_transform(*dense, relu, "ortho")
        torch.cuda.synchronize()
    finally:
        torch.backends.cuda.preferred_blas_library(before)
    check_output(got, (2, 24, 12, 10), dtype)
    assert scaled_error(got.cpu(), want.cpu()) <= TOLERANCE.get(dtype, HALF_FLOOR.get(dtype))
    if dtype == torch.float32:
        reference = spectral_transform_reference(x, *p.values(), bias, other, relu, "ortho")
        assert scaled_error(got.cpu(), reference) <= FLOAT32_TOL
