#!/usr/bin/env python3
"""GPU benchmarks of the triton and cuda backends: the spectral transform alone and the whole generator.

Kernel suite: big-lama's SpectralTransform (384 -> 384) at the 1/8-resolution maps of
512^2, 1024^2, 2048^2 and 1000x750 images: the reference module (eager fp32, TF32,
torch.compile), the Triton op and the compiled CUDA extension's op
(torch.ops.lama_fast.spectral_transform), per call and replayed in a CUDA graph; the
DFT-as-matmul route against cuFFT over map sizes (the crossover, Triton only).
End to end: big-lama with random weights (lama_fast.model.random) at 512^2, 1024^2, 2048^2
and 1000x750 (padded to 752x1000 as the image pipeline does): the reference eager fp32,
TF32, in a CUDA graph (optimize(backend="reference", cuda_graphs=True)), torch.compile, and
the triton and cuda backends in float32 and bfloat16, with and without CUDA graphs.
Errors are against the reference in float64 on the same GPU; bfloat16's final images
against eager fp32's.

Rows of a part that cannot run (the CUDA kernels not built, triton missing) or that runs
past --budget-s are recorded as skipped with the reason; a failing system is recorded as
failed and the run goes on.  Writes bench/results/gpu_<card>.json and .md after every
row; prints the tables at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
KERNEL_MAPS = [(64, 64), (128, 128), (256, 256), (94, 125)]
CROSSOVER_SIDES = [8, 16, 24, 32, 48, 64]
# 1000x750 before 2048^2: when --budget-s runs out, the most expensive size is the one left out.
E2E_SHAPES = [(512, 512), (752, 1000), (1024, 1024), (2048, 2048)]
E2E_LABELS = {(512, 512): "512x512", (1024, 1024): "1024x1024", (2048, 2048): "2048x2048",
              (752, 1000): "1000x750 (752x1000 padded)"}
SUITES = ("fft", "kernel", "e2e", "profile", "crossover")
TRITON_ROUTES = ("fft", "dft")
DTYPES = ((torch.float32, "float32"), (torch.bfloat16, "bfloat16"))

# System names shared by the rows and the comparison tables.
CUDA_OP = "CUDA ext op"
CUDA_OP_TF32 = "CUDA ext op (TF32 matmul)"
REF_GRAPH = "reference (CUDA graph)"
TRITON_GRAPH, TRITON_EAGER = "triton backend (CUDA graph)", "triton backend (eager launches)"
CUDA_GRAPH, CUDA_EAGER = "cuda backend (CUDA graph)", "cuda backend (eager launches)"
CUDA_TF32_GRAPH = "cuda backend TF32 matmul (CUDA graph)"


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


class Budget:
    """Wall-clock seconds the benchmark may use (None: unlimited); parts started after it ran out are skipped."""

    def __init__(self, seconds: Optional[float]) -> None:
        self.seconds = seconds if seconds and seconds > 0 else None
        self.deadline = time.time() + self.seconds if self.seconds else None

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.time()

    def expired(self) -> bool:
        return self.left() <= 0

    def reason(self) -> str:
        return f"skipped: the time budget (--budget-s {self.seconds:.0f}) ran out"


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


def describe(error: BaseException, limit: int = 300) -> str:
    return f"{type(error).__name__}: {str(error)[:limit]}"


def extension_report(no_cuda_ext: bool = False) -> Dict[str, Any]:
    """What setup.py built (lama_fast/_build_info.json) and whether the CUDA kernels are registered.

    ``cuda_skip`` is None when the CUDA extension's rows run, else why they are skipped."""
    report: Dict[str, Any] = {}
    try:
        from lama_fast._build import build_info

        report["build_info"] = build_info()
    except Exception as error:
        report["build_info"] = {"error": describe(error)}
    try:
        from lama_fast.ops.spectral import cuda_kernels_status

        status = cuda_kernels_status()
    except Exception as error:
        status = f"lama_fast.ops.spectral.cuda_kernels_status() raised {describe(error)}"
    report["cuda_kernels"] = "registered" if status is None else f"not available: {status}"
    if no_cuda_ext:
        report["cuda_skip"] = "skipped: --no-cuda-ext"
    elif status is not None:
        report["cuda_skip"] = f"skipped: the CUDA kernels are not available ({status})"
    else:
        report["cuda_skip"] = None
    try:
        from lama_fast.kernels import triton_status

        triton_why = triton_status()
    except Exception as error:
        triton_why = describe(error)
    report["triton_skip"] = None if triton_why is None else f"skipped: triton unavailable ({triton_why})"
    return report


def machine() -> Dict[str, Any]:
    try:
        import triton

        triton_version = triton.__version__
    except Exception as error:
        triton_version = f"not importable ({type(error).__name__})"
    props = torch.cuda.get_device_properties(0)
    return {"gpu": torch.cuda.get_device_name(0), "sms": props.multi_processor_count,
            "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1), "torch": torch.__version__,
            "triton": triton_version, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cudnn": torch.backends.cudnn.version(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def parse_list(text: str, allowed: Sequence[str], what: str) -> List[str]:
    """Comma-separated names, each one of ``allowed`` ("none" or "" gives an empty list)."""
    items = [part.strip() for part in text.split(",") if part.strip() and part.strip() != "none"]
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return items


def parse_maps(text: str) -> List[Tuple[int, int]]:
    """"64x64,94x125" -> [(64, 64), (94, 125)]."""
    maps = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        match = re.fullmatch(r"(\d+)x(\d+)", part)
        if not match or min(int(match.group(1)), int(match.group(2))) < 2:
            raise argparse.ArgumentTypeError(f"kernel maps are HxW with H, W >= 2, got {part!r}")
        maps.append((int(match.group(1)), int(match.group(2))))
    return maps


def skip_row(suite: str, shape: str, system: str, dtype: str, status: str) -> Dict[str, Any]:
    return {"suite": suite, "shape": shape, "system": system, "dtype": dtype, "status": status}


# --- kernel suite ---------------------------------------------------------------------------------

def kernel_suite(args, rows: List[Dict[str, Any]], save: Callable[[], Any], budget: Budget) -> None:
    from lama_fast.benchmark import build_kernel_block, fold_spectral_transform

    module = build_kernel_block("spectral_transform").cuda()
    # The float64 truth on the CPU: see fft_check() for cuFFT's float64 results at 128^2 and 256^2.
    module64 = build_kernel_block("spectral_transform").double()
    folded = {k: v.cuda() for k, v in fold_spectral_transform(build_kernel_block("spectral_transform")).items()}
    weights = {torch.float32: folded, torch.bfloat16: {k: v.bfloat16() for k, v in folded.items()}}
    compiled = torch.compile(module) if args.compile else None
    if args.cuda_skip:
        log(f"  kernel: CUDA ext op rows {args.cuda_skip}")
        rows.append(skip_row("kernel", "all maps", CUDA_OP, "float32, bfloat16", args.cuda_skip))
    if args.triton_skip:
        log(f"  kernel: triton op rows {args.triton_skip}")
        rows.append(skip_row("kernel", "all maps", "triton op", "float32, bfloat16", args.triton_skip))
    for h, w in args.kernel_maps:
        shape = f"1x384x{h}x{w}"
        if budget.expired():
            log(f"  kernel {shape}: {budget.reason()}")
            rows.append(skip_row("kernel", shape, "all systems", "-", budget.reason()))
            continue
        gen = torch.Generator(device="cuda").manual_seed(h * 1000 + w)
        x = torch.randn(1, 384, h, w, device="cuda", generator=gen)
        with torch.no_grad():
            truth = module64(x.double().cpu())
        reps = 50 if h * w <= 128 * 128 else 20

        def record(system, dtype, fn, flags):
            if budget.expired():
                rows.append(skip_row("kernel", shape, system, dtype, budget.reason()))
                return
            with Flags(*flags), torch.no_grad():
                try:
                    timing = time_gpu(fn, 3, reps)
                    graph = time_graph(fn, reps)
                    out = fn()
                    err = scaled_error(out.float().cpu(), truth)
                except Exception as error:
                    log(f"  {shape} {system} {dtype} failed: {describe(error)}")
                    rows.append(skip_row("kernel", shape, system, dtype, f"failed: {describe(error)}"))
                    save()
                    return
            row = {"suite": "kernel", "block": "spectral_transform", "shape": shape, "map": [h, w],
                   "system": system, "dtype": dtype, "status": "ok", **timing,
                   "graph_median_ms": graph["median_ms"] if graph else None,
                   "max_scaled_error": err, "max_abs_ref": truth.abs().max().item(),
                   "flags": {"matmul_tf32": flags[0], "cudnn_tf32": flags[1]}}
            rows.append(row)
            save()
            log(f"  {shape} {system:28s} {dtype:9s} {timing['median_ms']:8.3f} ms  graph "
                f"{row['graph_median_ms'] if graph else float('nan'):8.3f} ms  err {err:.2e}")

        record("reference eager", "float32", lambda: module(x), DEFAULT_FLAGS)
        record("reference eager TF32", "float32", lambda: module(x), TF32_FLAGS)
        if compiled is not None:
            record("reference torch.compile", "float32", lambda: compiled(x), DEFAULT_FLAGS)
        inputs = {dtype: x.to(dtype).contiguous(memory_format=torch.channels_last) for dtype, _ in DTYPES}
        # The compiled CUDA extension: cuBLAS GEMMs (TF32 only when torch.backends.cuda.matmul allows it).
        if not args.cuda_skip:
            for dtype, name in DTYPES:
                p, xin = weights[dtype], inputs[dtype]

                def cuda_op(p=p, xin=xin):
                    return torch.ops.lama_fast.spectral_transform(xin, p["w1"], p["b1"], p["w_freq"], p["b_freq"],
                                                                  p["w2"], None, None, False, "ortho")
                record(CUDA_OP, name, cuda_op, DEFAULT_FLAGS)
                if dtype == torch.float32:
                    record(CUDA_OP_TF32, name, cuda_op, TF32_FLAGS)
        if not args.triton_skip:
            for dtype, name in DTYPES:
                p, xin = weights[dtype], inputs[dtype]
                variants = [(route, "ieee") for route in args.triton_routes if route == "fft" or max(h, w) <= 64]
                if dtype == torch.float32 and "fft" in args.triton_routes:
                    variants.append(("fft", "tf32x3"))
                for route, fp32_dot in variants:
                    label = f"triton op ({route})" if fp32_dot == "ieee" else f"triton op ({route}, 3xTF32)"
                    record(label, name, lambda p=p, xin=xin, route=route, fp32_dot=fp32_dot:
                           torch.ops.lama_fast.triton_spectral_transform(xin, p["w1"], p["b1"], p["w_freq"],
                                                                         p["b_freq"], p["w2"], None, None, False,
                                                                         "ortho", route, fp32_dot),
                           DEFAULT_FLAGS)


def crossover_suite(args, rows: List[Dict[str, Any]], budget: Budget) -> Dict[str, Any]:
    """fft vs dft route of the Triton op over square map sides: the largest side where dft wins."""
    from lama_fast.benchmark import build_kernel_block, fold_spectral_transform

    if args.triton_skip:
        log(f"  crossover: {args.triton_skip}")
        rows.append(skip_row("crossover", "all maps", "triton op", "float32, bfloat16", args.triton_skip))
        return {}
    folded = {k: v.cuda() for k, v in fold_spectral_transform(build_kernel_block("spectral_transform")).items()}
    result: Dict[str, Any] = {}
    for dtype, name in DTYPES:
        p = {k: v.to(dtype) for k, v in folded.items()}
        wins, measured = [], []
        for side in CROSSOVER_SIDES:
            shape = f"1x384x{side}x{side}"
            if budget.expired():
                rows.append(skip_row("crossover", shape, "triton op", name, budget.reason()))
                continue
            x = torch.randn(1, 384, side, side, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
            times = {}
            try:
                for route in ("fft", "dft"):
                    def fn(route=route):
                        return torch.ops.lama_fast.triton_spectral_transform(x, p["w1"], p["b1"], p["w_freq"],
                                                                             p["b_freq"], p["w2"], None, None, False,
                                                                             "ortho", route)
                    with torch.no_grad():
                        graph = time_graph(fn, 50)
                        eager = time_gpu(fn, 3, 50)
                    times[route] = graph["median_ms"] if graph else eager["median_ms"]
                    rows.append({"suite": "crossover", "shape": shape, "map": [side, side],
                                 "system": f"triton op ({route})", "dtype": name, "status": "ok", **eager,
                                 "graph_median_ms": graph["median_ms"] if graph else None})
            except Exception as error:
                log(f"  crossover {name} {side}: failed: {describe(error)}")
                rows.append(skip_row("crossover", shape, "triton op", name, f"failed: {describe(error)}"))
                continue
            measured.append(side)
            log(f"  crossover {name} {side:3d}: fft {times['fft']:.4f} ms, dft {times['dft']:.4f} ms (graph)")
            if times["dft"] < times["fft"]:
                wins.append(side)
        # The largest side up to which dft wins at every measured side.
        limit = 0
        for side in measured:
            if side in wins:
                limit = side
            else:
                break
        result[name] = {"dft_max_side": limit, "dft_wins_at": wins, "measured_sides": measured}
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


def profile_suite(args, rows: List[Dict[str, Any]], budget: Budget) -> None:
    """CUDA time per kernel of one op call (mean of 10), Triton op and CUDA ext op, a few maps, fp32 and bf16."""
    from torch.profiler import ProfilerActivity, profile

    from lama_fast.benchmark import build_kernel_block, fold_spectral_transform

    folded = {k: v.cuda() for k, v in fold_spectral_transform(build_kernel_block("spectral_transform")).items()}
    systems = []
    for system, skip in (("triton op", args.triton_skip), (CUDA_OP, args.cuda_skip)):
        if skip:
            log(f"  profile: {system} {skip}")
            rows.append(skip_row("profile", "all maps", system, "float32, bfloat16", skip))
        else:
            systems.append(system)
    for h, w in ((8, 8), (64, 64), (256, 256), (94, 125)):
        for dtype, name in DTYPES:
            p = {k: v.to(dtype) for k, v in folded.items()}
            x = torch.randn(1, 384, h, w, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
            for system in systems:
                shape = f"1x384x{h}x{w}"
                if budget.expired():
                    rows.append(skip_row("profile", shape, system, name, budget.reason()))
                    continue
                if system == CUDA_OP:
                    def fn():
                        return torch.ops.lama_fast.spectral_transform(x, p["w1"], p["b1"], p["w_freq"], p["b_freq"],
                                                                      p["w2"], None, x, True, "ortho")
                else:
                    def fn():
                        return torch.ops.lama_fast.triton_spectral_transform(x, p["w1"], p["b1"], p["w_freq"],
                                                                             p["b_freq"], p["w2"], None, x, True,
                                                                             "ortho", "fft")
                try:
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
                except Exception as error:
                    log(f"  profile {shape} {system} {name} failed: {describe(error)}")
                    rows.append(skip_row("profile", shape, system, name, f"failed: {describe(error)}"))
                    continue
                kernels.sort(key=lambda k: -k["us_per_op_call"])
                rows.append({"suite": "profile", "shape": shape, "system": system, "dtype": name, "status": "ok",
                             "kernels": kernels[:12]})
                log(f"  profile {shape} {system} {name}: " + "; ".join(
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


def release(module: Any) -> None:
    """Drop a module's captured CUDA graphs (GpuGenerator.release_graphs, CudaGraphed.graphs.clear)."""
    if module is None:
        return
    if hasattr(module, "release_graphs"):
        module.release_graphs()
    elif hasattr(module, "graphs") and hasattr(module.graphs, "clear"):
        module.graphs.clear()


def build_systems(reference: torch.nn.Module, args) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """The modules of the end-to-end suite, by key; a key that could not be built maps to its reason."""
    import lama_fast

    builders: List[Tuple[str, Optional[str], Callable[[], Any]]] = [
        ("reference graph", None, lambda: lama_fast.optimize(reference, backend="reference", device="cuda",
                                                             dtype=torch.float32, cuda_graphs=True))]
    for dtype, name in DTYPES:
        builders += [
            (f"triton {name}", args.triton_skip,
             lambda dtype=dtype: lama_fast.optimize(reference, backend="triton", device="cuda", dtype=dtype)),
            (f"cuda {name}", args.cuda_skip,
             lambda dtype=dtype: lama_fast.optimize(reference, backend="cuda", device="cuda", dtype=dtype)),
            (f"cuda {name} eager", args.cuda_skip,
             lambda dtype=dtype: lama_fast.optimize(reference, backend="cuda", device="cuda", dtype=dtype,
                                                    cuda_graphs=False)),
        ]
    modules: Dict[str, Any] = {}
    problems: Dict[str, str] = {}
    for key, skip, build in builders:
        if skip:
            problems[key] = skip
            continue
        try:
            start = time.perf_counter()
            modules[key] = build()
            log(f"  built {key} in {time.perf_counter() - start:.1f} s")
        except Exception as error:
            problems[key] = f"failed: optimize() raised {describe(error)}"
            log(f"  building {key} {problems[key]}")
    return modules, problems


def e2e_suite(args, rows: List[Dict[str, Any]], save: Callable[[], Any], budget: Budget) -> None:
    from lama_fast.model.random import random_generator

    reference = random_generator("big-lama", seed=0).cuda().eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    compile_labels = set(args.compile_sizes)
    modules, problems = build_systems(reference, args)
    for shape in E2E_SHAPES:
        h, w = shape
        label = E2E_LABELS[shape]
        if budget.expired():
            log(f"e2e {label}: {budget.reason()}")
            rows.append(skip_row("e2e", label, "all systems", "-", budget.reason()))
            save()
            continue
        x = e2e_input(h, w).cuda()
        reps = {512: 20, 752: 10, 1024: 10, 2048: 5}.get(h, 5)
        try:
            with torch.no_grad(), Flags(*STRICT_FLAGS), cpu_ffts():
                truth = reference.double()(x.double()).cpu()
        except Exception as error:
            log(f"e2e {label}: the float64 reference failed: {describe(error)}")
            rows.append(skip_row("e2e", label, "all systems", "-", f"failed: float64 reference {describe(error)}"))
            save()
            continue
        finally:
            reference.float()
        torch.cuda.empty_cache()
        eager_out = None
        log(f"e2e {label}: float64 reference done, output std {truth.std().item():.4f}")

        def record(system, dtype, fn, flags, note="", module=None, key=None):
            """Time ``fn`` (or record why ``key``'s module is missing); compare with fp64 and eager fp32."""
            nonlocal eager_out
            if key is not None and key in problems:
                rows.append(skip_row("e2e", label, system, dtype, problems[key]))
                return
            if budget.expired():
                rows.append(skip_row("e2e", label, system, dtype, budget.reason()))
                return
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
                    log(f"  {label} {system} {dtype} failed: {describe(error)}")
                    rows.append(skip_row("e2e", label, system, dtype, f"failed: {describe(error)}"))
                    save()
                    return
            row = {"suite": "e2e", "block": "generator", "shape": label, "size": [h, w], "system": system,
                   "dtype": dtype, "status": "ok", **timing, "first_call_s": first_s,
                   "peak_mem_mib": torch.cuda.max_memory_allocated() / 2 ** 20,
                   "max_abs_error_vs_fp64": (out.double() - truth).abs().max().item(),
                   "output_std": truth.std().item(), "flags": {"matmul_tf32": flags[0], "cudnn_tf32": flags[1]},
                   "note": note, **{f"vs_fp64_{k}": v for k, v in agreement(out, truth, x.cpu()).items()}}
            graph_error = getattr(module, "graph_error", None) if module is not None else None
            if graph_error and "CUDA graph" in system:
                row["graph_error"] = graph_error
                row["note"] = (note + "; " if note else "") + f"graph capture FAILED, ran eagerly: {graph_error}"
                log(f"  {label} {system}: graph capture failed, the row ran eagerly: {graph_error}")
            if system == "reference eager":
                eager_out = out
            elif eager_out is not None:
                row.update({f"vs_eager_{k}": v for k, v in agreement(out, eager_out, x.cpu()).items()})
            rows.append(row)
            save()
            log(f"  {label} {system:38s} {dtype:9s} {timing['median_ms']:9.2f} ms (first {first_s:6.2f} s) "
                f"err {row['max_abs_error_vs_fp64']:.1e} final within 2 of eager "
                f"{row.get('vs_eager_final_within2', 1.0):.5f} peak {row['peak_mem_mib']:.0f} MiB")

        record("reference eager", "float32", lambda: reference(x), DEFAULT_FLAGS,
               "PyTorch defaults: cuDNN TF32 on, matmul TF32 off")
        record("reference eager TF32", "float32", lambda: reference(x), TF32_FLAGS)
        ref_graph = modules.get("reference graph")
        record(REF_GRAPH, "float32", lambda m=ref_graph: m(x), DEFAULT_FLAGS,
               "optimize(backend='reference', cuda_graphs=True): captured once per shape, replayed",
               module=ref_graph, key="reference graph")
        if label.split(" ")[0] in compile_labels:
            try:
                compiled = torch.compile(reference)
                record("reference torch.compile", "float32", lambda: compiled(x), DEFAULT_FLAGS,
                       "inductor default mode; first call includes compilation")
                del compiled
                torch._dynamo.reset()
            except Exception as error:
                log(f"  torch.compile failed: {describe(error)}")
        # The cuda backend: the compiled extension's spectral op; graphs on by default, off with cuda_graphs=False.
        for dtype, name in DTYPES:
            graphed, eager = modules.get(f"cuda {name}"), modules.get(f"cuda {name} eager")
            record(CUDA_GRAPH, name, lambda m=graphed: m(x), DEFAULT_FLAGS,
                   "spectral GEMMs exact float32 (cuBLAS, matmul TF32 off); other convs cuDNN, TF32 per torch "
                   "default" if dtype == torch.float32 else "bfloat16 convs and spectral GEMMs, FFT float32",
                   module=graphed, key=f"cuda {name}")
            record(CUDA_EAGER, name, lambda m=eager: m(x), DEFAULT_FLAGS, "optimize(..., cuda_graphs=False)",
                   module=eager, key=f"cuda {name} eager")
            if dtype == torch.float32:
                record(CUDA_TF32_GRAPH, name, lambda m=graphed: m(x), TF32_FLAGS,
                       "torch.backends.cuda.matmul.allow_tf32 on: the spectral GEMMs in TF32",
                       module=graphed, key=f"cuda {name}")
            release(graphed)
        for dtype, name in DTYPES:
            key = f"triton {name}"
            module = modules.get(key)
            if module is not None:
                module.use_cuda_graphs = True
            record(TRITON_GRAPH, name, lambda m=module: m(x), DEFAULT_FLAGS,
                   "spectral ops exact float32 (ieee); other convs cuDNN, TF32 per torch default"
                   if dtype == torch.float32 else "bfloat16 convs, FFT float32, output conv float32",
                   module=module, key=key)
            release(module)
            if module is not None:
                module.use_cuda_graphs = False
            record(TRITON_EAGER, name, lambda m=module: m(x), DEFAULT_FLAGS, key=key)
            if dtype == torch.float32 and module is not None:
                module.use_cuda_graphs = True
                record("triton backend strict fp32 (CUDA graph)", name, lambda m=module: m(x), STRICT_FLAGS,
                       "cuDNN TF32 off too: every convolution float32", module=module, key=key)
                try:
                    module.set_fp32_dot("tf32x3")
                    record("triton backend 3xTF32 spectral (CUDA graph)", name, lambda m=module: m(x),
                           DEFAULT_FLAGS, "spectral dots as 3xTF32; other convs cuDNN, TF32 per torch default",
                           module=module, key=key)
                finally:
                    module.set_fp32_dot("ieee")
            release(module)
        release(ref_graph)
        torch.cuda.empty_cache()
        save()


# --- reports ----------------------------------------------------------------------------------------

def _find(rows: List[Dict[str, Any]], shape: str, system: str, dtype: str) -> Optional[Dict[str, Any]]:
    return next((r for r in rows if r["shape"] == shape and r["system"] == system and r["dtype"] == dtype
                 and r["status"] == "ok"), None)


def _ms(r: Optional[Dict[str, Any]], digits: int = 3) -> str:
    if r is None:
        return "-"
    graph = f"{r['graph_median_ms']:.{digits}f}" if r.get("graph_median_ms") else "-"
    return f"{r['median_ms']:.{digits}f} / {graph}"


def _ratio(base: Optional[Dict[str, Any]], r: Optional[Dict[str, Any]]) -> str:
    """base time / r's time, per call and CUDA-graph (> 1: r is faster)."""
    if base is None or r is None:
        return "-"
    call = f"{base['median_ms'] / r['median_ms']:.2f}x"
    graph = (f"{base['graph_median_ms'] / r['graph_median_ms']:.2f}x"
             if base.get("graph_median_ms") and r.get("graph_median_ms") else "-")
    return f"{call} / {graph}"


# (label, dtype of the rows, reference system (always float32), triton system, CUDA ext system)
KERNEL_COMPARISONS = [
    ("float32", "float32", "reference eager", "triton op (fft)", CUDA_OP),
    ("float32, TF32 allowed", "float32", "reference eager TF32", "triton op (fft, 3xTF32)", CUDA_OP_TF32),
    ("bfloat16", "bfloat16", "reference eager", "triton op (fft)", CUDA_OP),
]


def kernel_comparison(kernel: List[Dict[str, Any]]) -> List[str]:
    """CUDA ext op vs Triton op vs the reference module, one line per map and precision."""
    lines = ["### CUDA extension vs Triton vs reference", "",
             "Each cell: per-call median / CUDA-graph median. Speed-ups are the time of the reference module "
             "in eager float32 with PyTorch's defaults (`reference eager`, same run, same map) divided by the "
             "system's (> 1: faster); `CUDA ext vs Triton` is the Triton op's time divided by the CUDA "
             "extension's. The TF32 line's reference column is `reference eager TF32`, the Triton op there "
             "runs its dots as 3xTF32, the CUDA extension its cuBLAS GEMMs with matmul TF32 allowed.", "",
             "| map | precision | reference ms | Triton op ms | CUDA ext ms | Triton speed-up | "
             "CUDA ext speed-up | CUDA ext vs Triton | max scaled error vs fp64: reference / Triton / CUDA ext |",
             "|---|---|---|---|---|---|---|---|---|"]
    count = 0
    for shape in dict.fromkeys(r["shape"] for r in kernel):
        base = _find(kernel, shape, "reference eager", "float32")
        for label, dtype, ref_system, triton_system, cuda_system in KERNEL_COMPARISONS:
            ref = _find(kernel, shape, ref_system, "float32")
            tri = _find(kernel, shape, triton_system, dtype)
            cud = _find(kernel, shape, cuda_system, dtype)
            if tri is None and cud is None:
                continue
            errors = " / ".join(f"{r['max_scaled_error']:.1e}" if r else "-" for r in (ref, tri, cud))
            lines.append(f"| {shape} | {label} | {_ms(ref)} | {_ms(tri)} | {_ms(cud)} | {_ratio(base, tri)} | "
                         f"{_ratio(base, cud)} | {_ratio(tri, cud)} | {errors} |")
            count += 1
    return lines + [""] if count else []


# (label, system, dtype) columns of the end-to-end summary
E2E_COLUMNS = [
    ("reference eager fp32", "reference eager", "float32"),
    ("reference fp32, CUDA graph", REF_GRAPH, "float32"),
    ("triton fp32", TRITON_GRAPH, "float32"),
    ("cuda fp32", CUDA_GRAPH, "float32"),
    ("triton bf16", TRITON_GRAPH, "bfloat16"),
    ("cuda bf16", CUDA_GRAPH, "bfloat16"),
    ("cuda fp32, no graphs", CUDA_EAGER, "float32"),
    ("cuda bf16, no graphs", CUDA_EAGER, "bfloat16"),
]


def e2e_comparison(e2e: List[Dict[str, Any]]) -> List[str]:
    """Medians in ms per image and system, with the speed-up vs the reference in a CUDA graph."""
    shapes = list(dict.fromkeys(r["shape"] for r in e2e if r["status"] == "ok"))
    if not shapes:
        return []
    lines = ["### Summary: medians in ms (speed-up vs the reference fp32 in a CUDA graph, same run)", "",
             "Backends with CUDA graphs unless the column says otherwise.", "",
             "| image | " + " | ".join(label for label, _, _ in E2E_COLUMNS) + " |",
             "|---|" + "---|" * len(E2E_COLUMNS)]
    for shape in shapes:
        base = _find(e2e, shape, REF_GRAPH, "float32")
        cells = []
        for _, system, dtype in E2E_COLUMNS:
            r = _find(e2e, shape, system, dtype)
            if r is None:
                cells.append("-")
            elif base is None:
                cells.append(f"{r['median_ms']:.2f}")
            else:
                cells.append(f"{r['median_ms']:.2f} ({base['median_ms'] / r['median_ms']:.2f}x)")
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    return lines + [""]


def header_lines(info: Dict[str, Any]) -> List[str]:
    ext = info.get("extension", {})
    build = ext.get("build_info", {})
    built = [f"CPU kernels: {build.get('cpu_extension', 'unknown')}",
             f"CUDA kernels: {build.get('cuda_extension', 'unknown')}"]
    if "cuda_arch_list" in build:
        built.append(f"CUDA arch list: {build['cuda_arch_list']}")
    if "torch_version" in build:
        built.append(f"built for torch {build['torch_version']}")
    lines = ["Compiled extension `lama_fast._C` (lama_fast/_build_info.json): " + "; ".join(built) + ". "
             f"CUDA kernels at run time: {ext.get('cuda_kernels', 'unknown')}.", ""]
    for what, key in (("CUDA extension rows", "cuda_skip"), ("Triton rows", "triton_skip")):
        if ext.get(key):
            lines += [f"**{what} {ext[key]}**", ""]
    return lines


def markdown(rows: List[Dict[str, Any]], info: Dict[str, Any], crossover: Optional[Dict[str, Any]]) -> str:
    lines = [f"# lama_fast GPU benchmarks: {info['gpu']}", "",
             f"torch {info['torch']}, triton {info['triton']}, CUDA {info['cuda']}, cuDNN {info['cudnn']}, "
             f"Python {info['python']}, {info['sms']} SMs, {info['gpu_memory_gib']} GiB; {info['date']}. "
             "Times are medians of CUDA-event timings per call (eager launches), and of CUDA-graph replays "
             "where a graph column is given. Batch 1, big-lama, random weights (lama_fast.model.random).", ""]
    lines += header_lines(info)
    kernel = [r for r in rows if r["suite"] == "kernel" and r["status"] == "ok"]
    if kernel:
        lines += ["## Spectral transform 384 -> 384", ""]
        lines += kernel_comparison(kernel)
        lines += ["### Every row", "",
                  "| map | system | dtype | median ms | graph ms (speed-up) | speed-up vs reference eager fp32 | "
                  "max scaled error vs fp64 |", "|---|---|---|---|---|---|---|"]
        for r in kernel:
            base = _find(kernel, r["shape"], "reference eager", "float32")
            sp = f"{base['median_ms'] / r['median_ms']:.2f}x" if base else "-"
            gsp = (base["graph_median_ms"] / r["graph_median_ms"]) if base and r.get("graph_median_ms") and base.get(
                "graph_median_ms") else None
            graph = f"{r['graph_median_ms']:.3f}" if r.get("graph_median_ms") else "-"
            if gsp is not None:
                graph += f" ({gsp:.2f}x)"
            lines.append(f"| {r['shape']} | {r['system']} | {r['dtype']} | {r['median_ms']:.3f} | {graph} | "
                         f"{sp} | {r['max_scaled_error']:.1e} |")
        lines.append("")
    cross = [r for r in rows if r["suite"] == "crossover" and r["status"] == "ok"]
    if cross:
        lines += ["## DFT-as-matmul vs cuFFT route of the Triton op (whole op, CUDA-graph medians)", "",
                  "| map | dtype | fft ms | dft ms |", "|---|---|---|---|"]
        for r in cross:
            if r["system"] == "triton op (fft)":
                d = _find(cross, r["shape"], "triton op (dft)", r["dtype"])
                if d is None:
                    continue
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
    profiles = [r for r in rows if r["suite"] == "profile" and r["status"] == "ok"]
    if profiles:
        lines += ["## Where one op call spends its GPU time (torch.profiler, mean of 10 calls; bias none, "
                  "`other` and ReLU on)", ""]
        for r in profiles:
            lines.append(f"- {r['shape']} {r.get('system', 'triton op')} {r['dtype']}: " + "; ".join(
                f"`{k['name'][:60]}` x{k['calls']} {k['us_per_op_call']:.1f} us" for k in r["kernels"][:8]))
        lines.append("")
    e2e = [r for r in rows if r["suite"] == "e2e"]
    if e2e:
        lines += ["## End to end (generator forward)", ""]
        lines += e2e_comparison(e2e)
        lines += ["### Every row", "",
                  "| image | system | dtype | median ms | speed-up vs eager fp32 | speed-up vs reference CUDA graph | "
                  "first call s | peak MiB | max abs err vs fp64 (output std) | "
                  "final image within 2 levels of eager fp32 |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in e2e:
            if r["status"] != "ok":
                lines.append(f"| {r['shape']} | {r['system']} | {r['dtype']} | {r['status']} | | | | | | |")
                continue
            base = _find(e2e, r["shape"], "reference eager", "float32")
            graph_base = _find(e2e, r["shape"], REF_GRAPH, "float32")
            sp = f"{base['median_ms'] / r['median_ms']:.2f}x" if base else "-"
            gsp = f"{graph_base['median_ms'] / r['median_ms']:.2f}x" if graph_base else "-"
            within = r.get("vs_eager_final_within2")
            system = r["system"] + (" **(graph capture failed: ran eagerly)**" if r.get("graph_error") else "")
            lines.append(f"| {r['shape']} | {system} | {r['dtype']} | {r['median_ms']:.2f} | {sp} | {gsp} | "
                         f"{r['first_call_s']:.2f} | {r['peak_mem_mib']:.0f} | {r['max_abs_error_vs_fp64']:.1e} "
                         f"({r['output_std']:.3f}) | "
                         + (f"{100 * within:.3f} % (max {r['vs_eager_final_u8_max']})" if within is not None
                            else "-") + " |")
        lines.append("")
    missing = [r for r in rows if r["status"] != "ok" and r["suite"] != "e2e"]
    skipped_suites = info.get("suites_skipped") or {}
    if missing or skipped_suites:
        lines += ["## Not measured", ""]
        lines += [f"- suite {suite}: {why}" for suite, why in skipped_suites.items()]
        lines += [f"- {r['suite']} {r['shape']} {r['system']} {r['dtype']}: {r['status']}" for r in missing]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder of gpu_<card>.md / .json")
    parser.add_argument("--suites", default=",".join(SUITES), help=f"comma separated, of {', '.join(SUITES)}")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip torch.compile of the reference module in the kernel suite")
    parser.add_argument("--compile-sizes", default="512x512",
                        help="end-to-end sizes (labels) at which to torch.compile the reference, comma separated, "
                             f"of {', '.join(l.split(' ')[0] for l in E2E_LABELS.values())}; 'none' for none")
    parser.add_argument("--kernel-maps", default=",".join(f"{h}x{w}" for h, w in KERNEL_MAPS),
                        help="maps (HxW) of the kernel suite, comma separated")
    parser.add_argument("--triton-routes", default="fft,dft",
                        help="routes of the Triton op in the kernel suite (dft only at maps up to 64^2)")
    parser.add_argument("--no-cuda-ext", action="store_true",
                        help="skip the compiled CUDA extension's rows (the op and the cuda backend)")
    parser.add_argument("--budget-s", type=float, default=0.0,
                        help="stop starting new rows after this many seconds (0: no limit); the rest are "
                             "recorded as skipped")
    args = parser.parse_args(argv)
    try:
        suites = parse_list(args.suites, SUITES, "suites")
        args.triton_routes = parse_list(args.triton_routes, TRITON_ROUTES, "triton routes")
        args.kernel_maps = parse_maps(args.kernel_maps)
        args.compile_sizes = parse_list(args.compile_sizes, [l.split(" ")[0] for l in E2E_LABELS.values()],
                                        "compile sizes")
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if not torch.cuda.is_available():
        print("gpu_bench: no CUDA device", file=sys.stderr)
        return 2
    budget = Budget(args.budget_s)
    ext = extension_report(args.no_cuda_ext)
    args.cuda_skip, args.triton_skip = ext["cuda_skip"], ext["triton_skip"]
    if not args.triton_skip:
        try:
            import lama_fast.kernels.spectral  # noqa: F401  (registers the Triton ops)
        except Exception as error:
            args.triton_skip = ext["triton_skip"] = f"skipped: lama_fast.kernels.spectral failed ({describe(error)})"

    info = machine()
    info["extension"] = ext
    info["suites_skipped"] = {}
    log(f"{info}")
    log(f"CUDA extension: {ext['build_info'].get('cuda_extension')}; at run time: {ext['cuda_kernels']}")
    for what, key in (("CUDA extension rows", "cuda_skip"), ("Triton rows", "triton_skip")):
        if ext[key]:
            log(f"{what} {ext[key]}")
    rows: List[Dict[str, Any]] = []
    crossover: Dict[str, Any] = {}
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

    def run(suite: str, fn: Callable[[], Any]) -> None:
        if suite not in suites:
            return
        if budget.expired():
            info["suites_skipped"][suite] = budget.reason()
            log(f"suite {suite}: {budget.reason()}")
            save()
            return
        suite_start = time.time()
        log(f"suite {suite} (time left: {budget.left():.0f} s)")
        try:
            fn()
        except Exception as error:  # a suite that breaks leaves the others to run
            info["suites_skipped"][suite] = f"failed: {describe(error, 500)}"
            log(f"suite {suite} failed: {describe(error, 500)}")
        save()
        log(f"suite {suite} took {time.time() - suite_start:.0f} s")

    run("fft", lambda: fft_check(rows))
    run("kernel", lambda: kernel_suite(args, rows, save, budget))
    run("e2e", lambda: e2e_suite(args, rows, save, budget))
    run("profile", lambda: profile_suite(args, rows, budget))
    run("crossover", lambda: crossover.update(crossover_suite(args, rows, budget)))
    print(save())
    log(f"total {time.time() - started:.0f} s; wrote {out / f'gpu_{name}.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
