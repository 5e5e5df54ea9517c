"""The GPU benchmark's op-level suites: the spectral transform per map (kernel), the Triton op's dft route against
its fft route (crossover), cuFFT against the CPU's FFT (fft) and GPU time per kernel (profile)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

from gpu_common import (CROSSOVER_SIDES, CUDA_OP, CUDA_OP_TF32, DEFAULT_FLAGS, DFT_ROUTE_MAX_SIDE, DTYPES,
                        TF32_FLAGS, Budget, Rows, attempt, failed, flags_field, gpu_row, log, scaled_error, skip_row,
                        spectral_weights, time_gpu, time_graph)

Weights = Dict[str, torch.Tensor]


def cuda_op(x: torch.Tensor, p: Weights, other: Optional[torch.Tensor] = None, relu: bool = False) -> torch.Tensor:
    """The compiled CUDA extension's spectral transform (no bias)."""
    return torch.ops.lama_fast.spectral_transform(x, p["w1"], p["b1"], p["w_freq"], p["b_freq"], p["w2"], None,
                                                  other, relu, "ortho")


def triton_op(x: torch.Tensor, p: Weights, route: str = "fft", fp32_dot: Optional[str] = None,
              other: Optional[torch.Tensor] = None, relu: bool = False) -> torch.Tensor:
    """The Triton op's spectral transform (no bias) by ``route``, its float32 dots as ``fp32_dot`` when given."""
    extra = () if fp32_dot is None else (fp32_dot,)
    return torch.ops.lama_fast.triton_spectral_transform(x, p["w1"], p["b1"], p["w_freq"], p["b_freq"], p["w2"], None,
                                                         other, relu, "ortho", route, *extra)


def skip_part(rows: Rows, suite: str, system: str, why: str) -> None:
    """Record that ``system``'s rows of ``suite`` do not run, at every map and dtype."""
    log(f"  {suite}: {system} rows {why}")
    rows.append(skip_row(suite, "all maps", system, "float32, bfloat16", why))


def kernel_suite(args, rows: Rows, save: Callable[[], Any], budget: Budget) -> None:
    """big-lama's SpectralTransform per map: the reference module, the CUDA extension's op, the Triton op."""
    from lama_fast.benchmark import build_kernel_block
    from lama_fast.ops.reference import spectral_transform_reference
    from lama_fast.rewrite import fold_spectral

    module = build_kernel_block("spectral_transform").cuda()
    # The float64 truth on the CPU: see fft_check() for cuFFT's float64 results at 128^2 and 256^2.
    folded64 = fold_spectral(build_kernel_block("spectral_transform"))
    weights = {dtype: spectral_weights(dtype) for dtype, _ in DTYPES}
    compiled = torch.compile(module) if args.compile else None
    # core: what the targets compare (the reference module eagerly, the ops in bfloat16) and nothing else.
    core = getattr(args, "kernel_systems", "all") == "core"
    if args.cuda_skip:
        skip_part(rows, "kernel", CUDA_OP, args.cuda_skip)
    if args.triton_skip:
        skip_part(rows, "kernel", "triton op", args.triton_skip)
    for h, w in args.kernel_maps:
        shape = f"1x384x{h}x{w}"
        if budget.skipped(rows, "kernel", shape, "all systems", "-"):
            log(f"  kernel {shape}: {budget.reason()}")
            continue
        gen = torch.Generator(device="cuda").manual_seed(h * 1000 + w)
        x = torch.randn(1, 384, h, w, device="cuda", generator=gen)
        truth = spectral_transform_reference(x.double().cpu(), folded64.w1, folded64.b1, folded64.w_freq,
                                             folded64.b_freq, folded64.w2, fft_norm=folded64.fft_norm)
        reps = 50 if h * w <= 128 * 128 else 20

        def record(system, dtype, fn, flags):
            if core and not (system == "reference eager" or dtype == "bfloat16"):
                return

            def run():
                timing, graph = time_gpu(fn, 3, reps), time_graph(fn, reps)
                return {**timing, "graph_median_ms": graph["median_ms"] if graph else None,
                        "max_scaled_error": scaled_error(fn().float().cpu(), truth)}

            got = attempt(rows, budget, save, ("kernel", shape, system, dtype), flags, run)
            if got is None:
                return
            row = gpu_row("kernel", shape, system, dtype, block="spectral_transform", map=[h, w], **got,
                          max_abs_ref=truth.abs().max().item(), flags=flags_field(flags))
            rows.append(row)
            save()
            graph_ms = row["graph_median_ms"] if row["graph_median_ms"] is not None else float("nan")
            log(f"  {shape} {system:28s} {dtype:9s} {row['median_ms']:8.3f} ms  graph {graph_ms:8.3f} ms  "
                f"err {row['max_scaled_error']:.2e}")

        record("reference eager", "float32", lambda: module(x), DEFAULT_FLAGS)
        record("reference eager TF32", "float32", lambda: module(x), TF32_FLAGS)
        if compiled is not None:
            record("reference torch.compile", "float32", lambda: compiled(x), DEFAULT_FLAGS)
        inputs = {dtype: x.to(dtype).contiguous(memory_format=torch.channels_last) for dtype, _ in DTYPES}
        # The compiled CUDA extension: cuBLAS GEMMs (TF32 only when torch.backends.cuda.matmul allows it).
        if not args.cuda_skip:
            for dtype, name in DTYPES:
                def run_cuda(p=weights[dtype], xin=inputs[dtype]):
                    return cuda_op(xin, p)
                record(CUDA_OP, name, run_cuda, DEFAULT_FLAGS)
                if dtype == torch.float32:
                    record(CUDA_OP_TF32, name, run_cuda, TF32_FLAGS)
        if not args.triton_skip:
            for dtype, name in DTYPES:
                p, xin = weights[dtype], inputs[dtype]
                variants = [(route, "ieee") for route in args.triton_routes
                            if route == "fft" or max(h, w) <= DFT_ROUTE_MAX_SIDE[route]]
                if dtype == torch.float32 and "fft" in args.triton_routes:
                    variants.append(("fft", "tf32x3"))
                for route, fp32_dot in variants:
                    label = f"triton op ({route})" if fp32_dot == "ieee" else f"triton op ({route}, 3xTF32)"
                    record(label, name, lambda p=p, xin=xin, route=route, fp32_dot=fp32_dot:
                           triton_op(xin, p, route, fp32_dot), DEFAULT_FLAGS)


def crossover_suite(args, rows: Rows, budget: Budget) -> Dict[str, Any]:
    """fft vs dft route of the Triton op over square map sides: the largest side where dft wins."""
    if args.triton_skip:
        skip_part(rows, "crossover", "triton op", args.triton_skip)
        return {}
    result: Dict[str, Any] = {}
    for dtype, name in DTYPES:
        p = spectral_weights(dtype)
        wins, measured = [], []
        for side in CROSSOVER_SIDES:
            shape = f"1x384x{side}x{side}"
            if budget.skipped(rows, "crossover", shape, "triton op", name):
                continue
            x = torch.randn(1, 384, side, side, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
            times = {}
            try:
                for route in ("fft", "dft"):
                    def fn(route=route):
                        return triton_op(x, p, route)
                    with torch.no_grad():
                        graph = time_graph(fn, 50)
                        eager = time_gpu(fn, 3, 50)
                    times[route] = graph["median_ms"] if graph else eager["median_ms"]
                    rows.append(gpu_row("crossover", shape, f"triton op ({route})", name, map=[side, side], **eager,
                                        graph_median_ms=graph["median_ms"] if graph else None))
            except Exception as error:
                failed(rows, "crossover", shape, "triton op", name, error, f"crossover {side}")
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


def fft_check(rows: Rows) -> None:
    """cuFFT against the CPU's FFT in float64 and float32, (1, 192, s, s)."""
    for side in (64, 128, 256):
        x = torch.randn(1, 192, side, side, dtype=torch.float64)
        want = torch.fft.rfft2(x, norm="ortho")
        back_want = torch.fft.irfft2(want, s=(side, side), norm="ortho")
        for dtype in (torch.float64, torch.float32):
            got = torch.fft.rfft2(x.to(device="cuda", dtype=dtype), norm="ortho").cpu()
            back = torch.fft.irfft2(want.to(device="cuda", dtype=got.dtype), s=(side, side), norm="ortho").cpu()
            row = gpu_row("fft_check", f"1x192x{side}x{side}", None, str(dtype)[6:],
                          rfft2_max_abs_err=(got.to(torch.complex128) - want).abs().max().item(),
                          irfft2_max_abs_err=(back.double() - back_want).abs().max().item(),
                          max_abs=want.abs().max().item())
            rows.append(row)
            log(f"  cuFFT vs CPU {row['shape']} {row['dtype']}: rfft2 {row['rfft2_max_abs_err']:.1e}, "
                f"irfft2 {row['irfft2_max_abs_err']:.1e} (max |X| {row['max_abs']:.1f})")


def profile_suite(args, rows: Rows, budget: Budget) -> None:
    """CUDA time per kernel of one op call (mean of 10), Triton op and CUDA ext op, a few maps, fp32 and bf16."""
    from torch.profiler import ProfilerActivity, profile

    systems = []
    for system, skip in (("triton op", args.triton_skip), (CUDA_OP, args.cuda_skip)):
        if skip:
            skip_part(rows, "profile", system, skip)
        else:
            systems.append(system)
    for h, w in ((8, 8), (64, 64), (256, 256), (94, 125)):
        for dtype, name in DTYPES:
            p = spectral_weights(dtype)
            x = torch.randn(1, 384, h, w, device="cuda").to(dtype).contiguous(memory_format=torch.channels_last)
            for system in systems:
                shape = f"1x384x{h}x{w}"
                if budget.skipped(rows, "profile", shape, system, name):
                    continue
                if system == CUDA_OP:
                    def fn():
                        return cuda_op(x, p, other=x, relu=True)
                else:
                    def fn():
                        return triton_op(x, p, "fft", other=x, relu=True)
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
                    failed(rows, "profile", shape, system, name, error, f"profile {shape}")
                    continue
                kernels.sort(key=lambda k: -k["us_per_op_call"])
                rows.append(gpu_row("profile", shape, system, name, kernels=kernels[:12]))
                log(f"  profile {shape} {system} {name}: " + "; ".join(
                    f"{k['name'][:48]} {k['us_per_op_call']:.1f} us" for k in kernels[:6]))
