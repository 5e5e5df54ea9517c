"""The GPU benchmark's end-to-end suite (bench/gpu_e2e.py) and kernel suite (bench/gpu_suites.py) run through on
the CPU: the tiny model (the kernel suite: big-lama's 384-channel block on a tiny map), both GPU generators and ops
(the triton backend under Triton's interpreter, the cuda backend's pipeline emulated), CUDA calls stubbed. It checks
that the suites, the opt-in variants and bench/gpu_targets.py fit together before a GPU's short window is spent on
them; its timings mean nothing."""

from __future__ import annotations

import sys
import time
import types
from pathlib import Path

import pytest
import torch
import torch._dynamo

import lama_fast
from lama_fast.kernels import triton_reasons
from configs import tiny_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

pytestmark = pytest.mark.skipif(bool(triton_reasons()) or torch.cuda.is_available(),
                                reason="runs the GPU suite on the CPU: needs triton's interpreter and no GPU")
SIZES = {(32, 32): "512x512", (24, 32): "1000x750 (752x1000 padded)"}


def timed_once(fn, warmup=0, repeats=1):
    """``time_gpu``'s result for one call of ``fn`` timed on the CPU clock."""
    start = time.perf_counter()
    fn()
    ms = (time.perf_counter() - start) * 1e3
    return {"median_ms": ms, "min_ms": ms, "max_ms": ms, "repeats": 1}


def stub_to_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """``.cuda()`` of tensors and modules leaves them on the CPU."""
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    monkeypatch.setattr(torch.nn.Module, "cuda", lambda self, *a, **k: self)


def test_the_core_end_to_end_suite_runs_through(monkeypatch: pytest.MonkeyPatch) -> None:
    from lama_fast._build import extension_reasons
    from lama_fast.gpu.generator import build_gpu_generator
    from lama_fast.model import build_generator

    if extension_reasons():
        pytest.skip("; ".join(extension_reasons()))
    import gpu_common
    import gpu_e2e
    import gpu_targets

    stub_to_cuda(monkeypatch)
    for name in ("synchronize", "reset_peak_memory_stats", "empty_cache"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 0)
    monkeypatch.setattr("lama_fast.model.random.random_generator", lambda name, seed=0: build_generator(tiny_config()))

    def optimize(reference, backend, device, dtype=torch.float32, cuda_graphs=True):
        assert device == "cuda"
        if backend == "reference":
            return reference
        # float16 for bfloat16: the interpreter's bfloat16 is wrong.
        half = torch.float16 if dtype == torch.bfloat16 else dtype
        return build_gpu_generator(reference, torch.device("cpu"), half,
                                   spectral="triton" if backend == "triton" else "cuda-emulated")

    monkeypatch.setattr(lama_fast, "optimize", optimize)
    monkeypatch.setattr(gpu_e2e, "time_gpu", timed_once)
    monkeypatch.setattr(gpu_e2e, "E2E_LABELS", SIZES)
    rows: list = []
    args = types.SimpleNamespace(triton_skip=None, cuda_skip=None, compile_sizes=[], e2e_shapes=list(SIZES),
                                 e2e_systems="core", e2e_profile=["1000x750"])
    try:
        gpu_e2e.e2e_suite(args, rows, lambda: None, gpu_common.Budget(0))  # the targets' systems
        targets_only = len(rows)
        gpu_e2e.e2e_suite(args, rows, lambda: None, gpu_common.Budget(0), [(24, 32)], variants_only=True)
    finally:
        torch._dynamo.reset()  # the compiled-stages variant's graphs

    got = {(r["shape"].split(" ")[0], r["system"], r["dtype"]): r["status"] for r in rows}
    variants = [f"{backend} backend, fused layout (CUDA graph)" for backend in ("triton", "cuda")]
    want = {}
    for size in ("512x512", "1000x750"):
        want.update({(size, "reference eager", "float32"): "ok", (size, "reference (CUDA graph)", "float32"): "ok"})
        for backend in ("triton", "cuda"):
            for dtype in ("float32", "bfloat16"):
                want[(size, f"{backend} backend (CUDA graph)", dtype)] = "ok"
    want.update({("1000x750", system, "bfloat16"): "ok" for system in variants})
    want[("1000x750", "triton backend, dft-tc route (CUDA graph)", "bfloat16")] = "ok"
    want[("1000x750", "triton backend, compiled stages (CUDA graph)", "bfloat16")] = "ok"
    # Without a GPU the profiler has nothing to record: the rows say why.
    for backend in ("triton", "cuda"):
        want[("1000x750", f"{backend} backend (eager launches)", "bfloat16")] = (
            "failed: AssertionError: No activities specified for the profiler")
    assert got == want
    assert all(", " not in r["system"] for r in rows[:targets_only])  # no variant among the targets' rows
    assert all(", " in r["system"] for r in rows[targets_only:])  # nothing but variants in their own pass
    result = gpu_targets.targets(rows, {})
    for key in ("bf16_1000x750_vs_eager_fp32", "bf16_1000x750_vs_reference_graph", "bf16_1000x750_uint8_within_2",
                "bf16_512_vs_eager_fp32", "fp32_vs_reference_graph_every_size"):
        assert all(entry["value"] is not None for entry in result[key]["by_backend"].values()), key
    assert result["bf16_1000x750_uint8_within_2"]["met"] is True
    gains = gpu_targets.variant_gains(rows)
    assert sorted(gains["1000x750 (752x1000 padded)"]["triton"]) == ["compiled stages", "dft-tc route", "fused layout"]
    assert sorted(gains["1000x750 (752x1000 padded)"]["cuda"]) == ["fused layout"] and "512x512" not in gains
    # Each row's final image against eager float32's (float16 on this tiny model: every pixel within 2 levels).
    assert all(r["vs_eager_final_within2"] == 1.0 for r in rows if r["status"] == "ok" and r["suite"] == "e2e"
               and r["system"] != "reference eager")


class _OnTheCpu:
    """``torch`` as gpu_suites sees it here: tensors and generators asked for on "cuda" made on the CPU."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def Generator(device=None):
        return torch.Generator()

    @staticmethod
    def randn(*size, device=None, **kwargs):
        return torch.randn(*size, **kwargs)


def test_the_core_kernel_suite_runs_through(monkeypatch: pytest.MonkeyPatch) -> None:
    from lama_fast._build import extension_reasons

    if extension_reasons():
        pytest.skip("; ".join(extension_reasons()))
    import gpu_common
    import gpu_suites

    import lama_fast.kernels.spectral  # noqa: F401  (registers the Triton op)

    stub_to_cuda(monkeypatch)
    monkeypatch.setattr(gpu_suites, "torch", _OnTheCpu())
    weights = gpu_suites.spectral_weights
    monkeypatch.setattr(gpu_suites, "spectral_weights", lambda dtype: weights(dtype, device="cpu"))

    def emulated(x, p, other=None, relu=False):
        return torch.ops.lama_fast.cuda_emulated_spectral_transform(x, p["w1"], p["b1"], p["w_freq"], p["b_freq"],
                                                                     p["w2"], None, other, relu, "ortho")

    monkeypatch.setattr(gpu_suites, "cuda_op", emulated)
    monkeypatch.setattr(gpu_suites, "time_gpu", timed_once)
    # No graph replay timed: a second run under the interpreter is slow at 384 channels.
    monkeypatch.setattr(gpu_suites, "time_graph", lambda fn, repeats: {"median_ms": 1.0})
    rows: list = []
    args = types.SimpleNamespace(triton_skip=None, cuda_skip=None, compile=False, kernel_maps=[(5, 7)],
                                 triton_routes=["fft", "dft-tc"], kernel_systems="core")
    gpu_suites.kernel_suite(args, rows, lambda: None, gpu_common.Budget(0))
    got = {(r["shape"], r["system"], r["dtype"]): r["status"] for r in rows}
    want = {}
    for shape in ("1x384x5x7",):
        want.update({(shape, "reference eager", "float32"): "ok", (shape, "CUDA ext op", "bfloat16"): "ok",
                     (shape, "triton op (fft)", "bfloat16"): "ok", (shape, "triton op (dft-tc)", "bfloat16"): "ok"})
    assert got == want
    assert all(r["graph_median_ms"] > 0 and r["max_scaled_error"] >= 0 for r in rows)
