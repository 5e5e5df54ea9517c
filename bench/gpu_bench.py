#!/usr/bin/env python3
"""GPU benchmarks of the triton backend: the spectral transform alone and the whole generator.

Kernel suite: big-lama's SpectralTransform (384 -> 384) at the 1/8-resolution maps of
512^2, 1024^2, 2048^2 and 1000x750 images, against the reference module (eager fp32, TF32,
torch.compile); the DFT-as-matmul route against cuFFT over map sizes (the crossover).
End to end: big-lama with random weights (lama_fast.model.random) at 512^2, 1024^2, 2048^2
and 1000x750 (padded to 752x1000 as the image pipeline does), eager fp32, TF32,
torch.compile, and the triton backend in float32 and bfloat16.  Errors are against the
reference in float64 on the same GPU; bfloat16's final images against eager fp32's.

Writes bench/results/gpu_<card>.json and .md; prints the tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
KERNEL_MAPS = [(64, 64), (128, 128), (256, 256), (94, 125)]
CROSSOVER_SIDES = [8, 16, 24, 32, 48, 64]
E2E_SHAPES = [(512, 512), (1024, 1024), (2048, 2048), (752, 1000)]
E2E_LABELS = {(512, 512): "512x512", (1024, 1024): "1024x1024", (2048, 2048): "2048x2048",
              (752, 1000): "1000x750 (752x1000 padded)"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Flags:
    """torch's TF32 switches for one system, restored afterwards."""

    def __init__(self, matmul_tf32: bool, cudnn_tf32: bool) -> None:
        self.want = (matmul_tf32, cudnn_tf32)

    def __enter__(self):
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.want

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


# PyTorch's defaults: TF32 off in matmuls, on in cuDNN convolutions.
DEFAULT_FLAGS = (False, True)
TF32_FLAGS = (True, True)
STRICT_FLAGS = (False, False)


def time_gpu(fn: Callable[[], Any], warmup: int, repeats: int) -> Dict[str, float]:
    """Median / min / max milliseconds of ``fn`` over ``repeats`` calls, CUDA events around each."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "repeats": repeats}


def time_graph(fn: Callable[[], Any], repeats: int) -> Optional[Dict[str, float]]:
    """The same, with ``fn`` captured once in a CUDA graph and replayed (launch overhead removed)."""
    try:
        fn()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return time_gpu(graph.replay, 3, repeats)
    except Exception as error:  # capture is best effort; the eager timing stands
        log(f"  graph capture failed: {type(error).__name__}: {error}")
        return None


def scaled_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    return ((got - want).abs() / want.abs().clamp(min=1)).max().item()


def machine() -> Dict[str, Any]:
    import triton

    props = torch.cuda.get_device_properties(0)
    return {"gpu": torch.cuda.get_device_name(0), "sms": props.multi_processor_count,
            "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1), "torch": torch.__version__,
            "triton": triton.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cudnn": torch.backends.cudnn.version(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


# --- kernel suite ---------------------------------------------------------------------------------

def kernel_suite(args, rows: List[Dict[str, Any]]) -> None:
    from lama_fast.benchmark import build_kernel_block, fold_spectral_transform
    from lama_fast.kernels import spectral as ks

    module = build_kernel_block("spectral_transform").cuda()
    # The float64 truth on the CPU: see fft_check() for cuFFT's float64 results at 128^2 and 256^2.
    module64 = build_kernel_block("spectral_transform").double()
    folded = {k: v.cuda() for k, v in fold_spectral_transform(build_kernel_block("spectral_transform")).items()}
    weights = {torch.float32: folded, torch.bfloat16: {k: v.bfloat16() for k, v in folded.items()}}
    compiled = torch.compile(module) if args.compile else None
    for h, w in KERNEL_MAPS:
        gen = torch.Generator(device="cuda").manual_seed(h * 1000 + w)
        x = torch.randn(1, 384, h, w, device="cuda", generator=gen)
        with torch.no_grad():
            truth = module64(x.double().cpu())
        shape = f"1x384x{h}x{w}"
        reps = 50 if h * w <= 128 * 128 else 20

        def record(system, dtype, fn, flags, out_fn=None):
            with Flags(*flags), torch.no_grad():
                try:
                    timing = time_gpu(fn, 3, reps)
                    graph = time_graph(fn, reps)
                    out = fn()
                except Exception as error:
                    log(f"  {system} failed: {type(error).__name__}: {error}")
                    rows.append({"suite": "kernel", "shape": shape, "system": system, "dtype": dtype,
                                 "status": f"failed: {type(error).__name__}: {error}"})
                    return
            err = scaled_error(out.float().cpu(), truth)
            row = {"suite": "kernel", "block": "spectral_transform", "shape": shape, "map": [h, w],
                   "system": system, "dtype": dtype, "status": "ok", **timing,
                   "graph_median_ms": graph["median_ms"] if graph else None,
                   "max_scaled_error": err, "max_abs_ref": truth.abs().max().item(),
                   "flags": {"matmul_tf32": flags[0], "cudnn_tf32": flags[1]}}
            rows.append(row)
            log(f"  {shape} {system:28s} {dtype:9s} {timing['median_ms']:8.3f} ms  graph "
                f"{row['graph_median_ms'] if graph else float('nan'):8.3f} ms  err {err:.2e}")

        record("reference eager", "float32", lambda: module(x), DEFAULT_FLAGS)
        record("reference eager TF32", "float32", lambda: module(x), TF32_FLAGS)
        if compiled is not None:
            record("reference torch.compile", "float32", lambda: compiled(x), DEFAULT_FLAGS)
        for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
            p = weights[dtype]
            xin = x.to(dtype).contiguous(memory_format=torch.channels_last)
            variants = [("fft", "ieee"), ("dft", "ieee")] if max(h, w) <= 64 else [("fft", "ieee")]
            if dtype == torch.float32:
                variants.append(("fft", "tf32x3"))
            for route, fp32_dot in variants:
                label = f"triton op ({route})" if fp32_dot == "ieee" else f"triton op ({route}, 3xTF32)"
                record(label, name, lambda p=p, xin=xin, route=route, fp32_dot=fp32_dot:
                       torch.ops.lama_fast.triton_spectral_transform(xin, p["w1"], p["b1"], p["w_freq"], p["b_freq"],
                                                                     p["w2"], None, None, False, "ortho", route,
                                                                     fp32_dot),
                       DEFAULT_FLAGS)
    del ks


def crossover_suite(args, rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """fft vs dft route of the whole op over square map sides: the largest side where dft wins."""
    from lama_fast.benchmark import build_kernel_block, fold_spectral_transform

    folded = {k: v.cuda() for k, v in fold_spectral_transform(build_kernel_block("spectral_transform")).items()}
    result: Dict[str, Any] = {}
    for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
        p = {k: v.to(dtype) for k, v in folded.items()}
        wins = []
        for side in CROSSOVER_SIDES:
            x = torch.randn(1, 384, side, side, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
            times = {}
            for route in ("fft", "dft"):
                def fn(route=route):
                    return torch.ops.lama_fast.triton_spectral_transform(x, p["w1"], p["b1"], p["w_freq"], p["b_freq"],
                                                                         p["w2"], None, None, False, "ortho", route)
                with torch.no_grad():
                    graph = time_graph(fn, 50)
                    eager = time_gpu(fn, 3, 50)
                times[route] = graph["median_ms"] if graph else eager["median_ms"]
                rows.append({"suite": "crossover", "shape": f"1x384x{side}x{side}", "map": [side, side],
                             "system": f"triton op ({route})", "dtype": name, "status": "ok", **eager,
                             "graph_median_ms": graph["median_ms"] if graph else None})
            log(f"  crossover {name} {side:3d}: fft {times['fft']:.4f} ms, dft {times['dft']:.4f} ms (graph)")
            if times["dft"] < times["fft"]:
                wins.append(side)
        # The largest side up to which dft wins at every measured side.
        limit = 0
        for side in CROSSOVER_SIDES:
            if side in wins:
                limit = side
            else:
                break
        result[name] = {"dft_max_side": limit, "dft_wins_at": wins}
    return result


class cpu_ffts:
    """torch.fft.rfftn / irfftn of CUDA float64 tensors computed on the CPU (see fft_check)."""

    def __enter__(self):
        self.saved = (torch.fft.rfftn, torch.fft.irfftn)
        rfftn, irfftn = self.saved

        def on_cpu(fn):
            def wrapped(x, *args, **kwargs):
                if x.is_cuda and x.dtype in (torch.float64, torch.complex128):
                    return fn(x.cpu(), *args, **kwargs).to(x.device)
                return fn(x, *args, **kwargs)
            return wrapped

        torch.fft.rfftn, torch.fft.irfftn = on_cpu(rfftn), on_cpu(irfftn)

    def __exit__(self, *exc):
        torch.fft.rfftn, torch.fft.irfftn = self.saved


def fft_check(rows: List[Dict[str, Any]]) -> None:
    """cuFFT against the CPU's FFT in float64 and float32, (1, 192, s, s)."""
    for side in (64, 128, 256):
        x = torch.randn(1, 192, side, side, dtype=torch.float64)
        want = torch.fft.rfft2(x, norm="ortho")
        back_want = torch.fft.irfft2(want, s=(side, side), norm="ortho")
        for dtype in (torch.float64, torch.float32):
            got = torch.fft.rfft2(x.to(device="cuda", dtype=dtype), norm="ortho").cpu()
            back = torch.fft.irfft2(want.to(device="cuda", dtype=got.dtype), s=(side, side), norm="ortho").cpu()
            row = {"suite": "fft_check", "shape": f"1x192x{side}x{side}", "dtype": str(dtype)[6:], "status": "ok",
                   "rfft2_max_abs_err": (got.to(torch.complex128) - want).abs().max().item(),
                   "irfft2_max_abs_err": (back.double() - back_want).abs().max().item(),
                   "max_abs": want.abs().max().item()}
            rows.append(row)
            log(f"  cuFFT vs CPU {row['shape']} {row['dtype']}: rfft2 {row['rfft2_max_abs_err']:.1e}, "
                f"irfft2 {row['irfft2_max_abs_err']:.1e} (max |X| {row['max_abs']:.1f})")


def profile_suite(rows: List[Dict[str, Any]]) -> None:
    """CUDA time per kernel of one triton op call (mean of 10), at a few maps, float32 and bfloat16."""
    from torch.profiler import ProfilerActivity, profile

    from lama_fast.benchmark import build_kernel_block, fold_spectral_transform

    folded = {k: v.cuda() for k, v in fold_spectral_transform(build_kernel_block("spectral_transform")).items()}
    for h, w in ((8, 8), (64, 64), (256, 256), (94, 125)):
        for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
            p = {k: v.to(dtype) for k, v in folded.items()}
            x = torch.randn(1, 384, h, w, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)

            def fn():
                return torch.ops.lama_fast.triton_spectral_transform(x, p["w1"], p["b1"], p["w_freq"], p["b_freq"],
                                                                     p["w2"], None, x, True, "ortho", "fft")
            with torch.no_grad():
                for _ in range(3):
                    fn()
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(10):
                        fn()
                    torch.cuda.synchronize()
            kernels = []
            for event in prof.key_averages():
                cuda_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
                if cuda_us and event.count:
                    kernels.append({"name": event.key[:90], "calls": event.count // 10,
                                    "us_per_op_call": cuda_us / 10})
            kernels.sort(key=lambda k: -k["us_per_op_call"])
            rows.append({"suite": "profile", "shape": f"1x384x{h}x{w}", "dtype": name, "status": "ok",
                         "kernels": kernels[:12]})
            log(f"  profile 1x384x{h}x{w} {name}: " + "; ".join(
                f"{k['name'][:48]} {k['us_per_op_call']:.1f} us" for k in kernels[:6]))


# --- end to end -------------------------------------------------------------------------------------

def e2e_input(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth random image with two rectangular holes, and the mask: (1, 4, H, W) float32."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, max(2, height // 16), max(2, width // 16), generator=gen),
                                            size=(height, width), mode="bilinear", align_corners=False)
    mask = torch.zeros(1, 1, height, width)
    mask[..., height // 8: height // 3, width // 5: width // 2] = 1
    mask[..., height // 2: 3 * height // 4, width // 2: 7 * width // 8] = 1
    return torch.cat((image * (1 - mask), mask), dim=1)


def to_uint8(out: torch.Tensor) -> torch.Tensor:
    return (out.double() * 255).clamp(0, 255).to(torch.uint8)


def agreement(out: torch.Tensor, ref: torch.Tensor, x: torch.Tensor) -> Dict[str, Any]:
    """uint8 level differences: of the raw outputs, and of the final blended images (pixels in the hole)."""
    mask = x[:, 3:4].double()
    image = x[:, :3].double()

    def final(o):
        return to_uint8(mask * o.double() + (1 - mask) * image)

    raw = (to_uint8(out).short() - to_uint8(ref).short()).abs().amax(dim=1)
    blended = (final(out).short() - final(ref).short()).abs().amax(dim=1)
    return {"raw_u8_max": int(raw.max()), "raw_within2": float((raw <= 2).double().mean()),
            "final_u8_max": int(blended.max()), "final_within2": float((blended <= 2).double().mean()),
            "final_within1": float((blended <= 1).double().mean())}


def e2e_suite(args, rows: List[Dict[str, Any]], save: Callable[[], Any]) -> None:
    import lama_fast
    from lama_fast.model.random import random_generator

    reference = random_generator("big-lama", seed=0).cuda().eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    compile_shapes = {E2E_SHAPES[i] for i in range(len(E2E_SHAPES)) if E2E_LABELS[E2E_SHAPES[i]].split(" ")[0]
                      in args.compile_sizes}
    ours = {dtype: lama_fast.optimize(reference, backend="triton", device="cuda", dtype=dtype)
            for dtype in (torch.float32, torch.bfloat16)}
    for shape in E2E_SHAPES:
        h, w = shape
        label = E2E_LABELS[shape]
        x = e2e_input(h, w).cuda()
        reps = {512: 20, 752: 10, 1024: 10, 2048: 5}[h]
        with torch.no_grad(), Flags(*STRICT_FLAGS), cpu_ffts():
            truth = reference.double()(x.double()).cpu()
            reference.float()
        torch.cuda.empty_cache()
        eager_out = None
        log(f"e2e {label}: float64 reference done, output std {truth.std().item():.4f}")

        def record(system, dtype, fn, flags, note=""):
            nonlocal eager_out
            torch.cuda.reset_peak_memory_stats()
            with Flags(*flags), torch.no_grad():
                try:
                    start = time.perf_counter()
                    out = fn()
                    torch.cuda.synchronize()
                    first_s = time.perf_counter() - start
                    timing = time_gpu(fn, 2, reps)
                    out = fn().float().cpu()
                except Exception as error:
                    log(f"  {system} failed: {type(error).__name__}: {error}")
                    rows.append({"suite": "e2e", "shape": label, "system": system, "dtype": dtype,
                                 "status": f"failed: {type(error).__name__}: {str(error)[:300]}"})
                    return
            row = {"suite": "e2e", "block": "generator", "shape": label, "size": [h, w], "system": system,
                   "dtype": dtype, "status": "ok", **timing, "first_call_s": first_s,
                   "peak_mem_mib": torch.cuda.max_memory_allocated() / 2 ** 20,
                   "max_abs_error_vs_fp64": (out.double() - truth).abs().max().item(),
                   "output_std": truth.std().item(), "flags": {"matmul_tf32": flags[0], "cudnn_tf32": flags[1]},
                   "note": note, **{f"vs_fp64_{k}": v for k, v in agreement(out, truth, x.cpu()).items()}}
            if eager_out is not None:
                row.update({f"vs_eager_{k}": v for k, v in agreement(out, eager_out, x.cpu()).items()})
            else:
                eager_out = out
            rows.append(row)
            log(f"  {label} {system:34s} {dtype:9s} {timing['median_ms']:9.2f} ms (first {first_s:6.2f} s) "
                f"err {row['max_abs_error_vs_fp64']:.1e} final within 2 of eager "
                f"{row.get('vs_eager_final_within2', 1.0):.5f} peak {row['peak_mem_mib']:.0f} MiB")

        record("reference eager", "float32", lambda: reference(x), DEFAULT_FLAGS,
               "PyTorch defaults: cuDNN TF32 on, matmul TF32 off")
        record("reference eager TF32", "float32", lambda: reference(x), TF32_FLAGS)
        try:
            with torch.no_grad():
                reference(x)
                torch.cuda.synchronize()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    graph_out = reference(x)
            record("reference eager (CUDA graph)", "float32", lambda: (graph.replay(), graph_out)[1], DEFAULT_FLAGS,
                   "the reference captured once and replayed: launch overhead removed")
            del graph, graph_out
        except Exception as error:
            log(f"  reference graph capture failed: {type(error).__name__}: {error}")
        if shape in compile_shapes:
            compiled = torch.compile(reference)
            record("reference torch.compile", "float32", lambda: compiled(x), DEFAULT_FLAGS,
                   "inductor default mode; first call includes compilation")
            del compiled
            torch._dynamo.reset()
        for dtype, name in ((torch.float32, "float32"), (torch.bfloat16, "bfloat16")):
            module = ours[dtype]
            module.use_cuda_graphs = True
            record("triton backend (CUDA graph)", name, lambda m=module: m(x), DEFAULT_FLAGS,
                   "spectral ops exact float32 (ieee); other convs cuDNN, TF32 per torch default"
                   if dtype == torch.float32 else "bfloat16 convs, FFT float32, output conv float32")
            module.release_graphs()
            module.use_cuda_graphs = False
            record("triton backend (eager launches)", name, lambda m=module: m(x), DEFAULT_FLAGS)
            if dtype == torch.float32:
                module.use_cuda_graphs = True
                record("triton backend strict fp32 (CUDA graph)", name, lambda m=module: m(x), STRICT_FLAGS,
                       "cuDNN TF32 off too: every convolution float32")
                module.set_fp32_dot("tf32x3")
                record("triton backend 3xTF32 spectral (CUDA graph)", name, lambda m=module: m(x), DEFAULT_FLAGS,
                       "spectral dots as 3xTF32; other convs cuDNN, TF32 per torch default")
                module.set_fp32_dot("ieee")
                module.release_graphs()
        torch.cuda.empty_cache()
        save()


# --- reports ----------------------------------------------------------------------------------------

def markdown(rows: List[Dict[str, Any]], info: Dict[str, Any], crossover: Optional[Dict[str, Any]]) -> str:
    lines = [f"# lama_fast GPU benchmarks: {info['gpu']}", "",
             f"torch {info['torch']}, triton {info['triton']}, CUDA {info['cuda']}, cuDNN {info['cudnn']}, "
             f"Python {info['python']}, {info['sms']} SMs, {info['gpu_memory_gib']} GiB; {info['date']}. "
             "Times are medians of CUDA-event timings per call (eager launches), and of CUDA-graph replays "
             "where a graph column is given. Batch 1, big-lama, random weights (lama_fast.model.random).", ""]
    kernel = [r for r in rows if r["suite"] == "kernel" and r["status"] == "ok"]
    if kernel:
        lines += ["## Spectral transform 384 -> 384", "",
                  "| map | system | dtype | median ms | graph ms (speed-up) | speed-up vs reference eager fp32 | "
                  "max scaled error vs fp64 |", "|---|---|---|---|---|---|---|"]
        for r in kernel:
            base = next(b for b in kernel if b["shape"] == r["shape"] and b["system"] == "reference eager")
            sp = base["median_ms"] / r["median_ms"]
            gsp = (base["graph_median_ms"] / r["graph_median_ms"]) if r.get("graph_median_ms") and base.get(
                "graph_median_ms") else None
            graph = f"{r['graph_median_ms']:.3f}" if r.get("graph_median_ms") else "-"
            if gsp is not None:
                graph += f" ({gsp:.2f}x)"
            lines.append(f"| {r['shape']} | {r['system']} | {r['dtype']} | {r['median_ms']:.3f} | {graph} | "
                         f"{sp:.2f}x | {r['max_scaled_error']:.1e} |")
        lines.append("")
    if crossover:
        lines += ["## DFT-as-matmul vs cuFFT route (whole op, CUDA-graph medians)", "",
                  "| map | dtype | fft ms | dft ms |", "|---|---|---|---|"]
        cross = [r for r in rows if r["suite"] == "crossover"]
        for r in cross:
            if r["system"] == "triton op (fft)":
                d = next(c for c in cross if c["shape"] == r["shape"] and c["dtype"] == r["dtype"]
                         and c["system"] == "triton op (dft)")
                lines.append(f"| {r['shape']} | {r['dtype']} | {r['graph_median_ms'] or r['median_ms']:.4f} | "
                             f"{d['graph_median_ms'] or d['median_ms']:.4f} |")
        lines += ["", f"Crossover (largest side up to which dft wins at every measured side): "
                      f"{json.dumps(crossover)}", ""]
    ffts = [r for r in rows if r["suite"] == "fft_check"]
    if ffts:
        lines += ["## cuFFT against the CPU's FFT (random (1, 192, s, s) float64 input)", "",
                  "| shape | dtype | rfft2 max abs error | irfft2 max abs error | max abs of the spectrum |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['shape']} | {r['dtype']} | {r['rfft2_max_abs_err']:.1e} | {r['irfft2_max_abs_err']:.1e} | "
                  f"{r['max_abs']:.1f} |" for r in ffts]
        lines.append("")
    profiles = [r for r in rows if r["suite"] == "profile"]
    if profiles:
        lines += ["## Where one triton op call spends its GPU time (torch.profiler, mean of 10 calls)", ""]
        for r in profiles:
            lines.append(f"- {r['shape']} {r['dtype']}: " + "; ".join(
                f"`{k['name'][:60]}` x{k['calls']} {k['us_per_op_call']:.1f} us" for k in r["kernels"][:8]))
        lines.append("")
    e2e = [r for r in rows if r["suite"] == "e2e"]
    if e2e:
        lines += ["## End to end (generator forward)", "",
                  "| image | system | dtype | median ms | speed-up vs eager fp32 | first call s | peak MiB | "
                  "max abs err vs fp64 (output std) | final image within 2 levels of eager fp32 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in e2e:
            if r["status"] != "ok":
                lines.append(f"| {r['shape']} | {r['system']} | {r['dtype']} | {r['status']} | | | | | |")
                continue
            base = next((b for b in e2e if b["shape"] == r["shape"] and b["system"] == "reference eager"
                         and b["status"] == "ok"), None)
            sp = f"{base['median_ms'] / r['median_ms']:.2f}x" if base else "-"
            within = r.get("vs_eager_final_within2")
            lines.append(f"| {r['shape']} | {r['system']} | {r['dtype']} | {r['median_ms']:.2f} | {sp} | "
                         f"{r['first_call_s']:.2f} | {r['peak_mem_mib']:.0f} | {r['max_abs_error_vs_fp64']:.1e} "
                         f"({r['output_std']:.3f}) | "
                         + (f"{100 * within:.3f} % (max {r['vs_eager_final_u8_max']})" if within is not None
                            else "-") + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--suites", default="fft,kernel,e2e,profile,crossover")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip torch.compile of the reference module in the kernel suite")
    parser.add_argument("--compile-sizes", default="512x512",
                        help="end-to-end sizes (labels) at which to compile the reference, comma separated")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA device", file=sys.stderr)
        return 2
    import lama_fast.kernels.spectral  # noqa: F401  (registers the ops)

    info = machine()
    log(f"{info}")
    rows: List[Dict[str, Any]] = []
    crossover: Dict[str, Any] = {}
    suites = args.suites.split(",")
    name = re.sub(r"[^A-Za-z0-9]+", "_", info["gpu"]).strip("_").lower()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    def save() -> str:
        report = markdown(rows, info, crossover or None)
        (out / f"gpu_{name}.json").write_text(json.dumps({"machine": info, "crossover": crossover or None,
                                                         "rows": rows}, indent=1), encoding="utf-8")
        (out / f"gpu_{name}.md").write_text(report + "\n", encoding="utf-8")
        return report

    if "fft" in suites:
        fft_check(rows)
    if "kernel" in suites:
        kernel_suite(args, rows)
        save()
    log(f"kernel suite took {time.time() - started:.0f} s")
    if "e2e" in suites:
        e2e_suite(args, rows, save)
    if "profile" in suites:
        profile_suite(rows)
        save()
    if "crossover" in suites:
        crossover.update(crossover_suite(args, rows))
        save()
    print(save())
    log(f"total {time.time() - started:.0f} s; wrote {out / f'gpu_{name}.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
