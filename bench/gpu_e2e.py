"""The GPU benchmark's end-to-end suite: the generator through the reference, the triton and the cuda backends."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from gpu_common import (CUDA_EAGER, CUDA_GRAPH, CUDA_TF32_GRAPH, DEFAULT_FLAGS, DTYPES, E2E_LABELS, E2E_SHAPES,
                        REF_GRAPH, STRICT_FLAGS, TF32_FLAGS, TRITON_EAGER, TRITON_GRAPH, Budget, Flags, Rows,
                        attempt, describe, failed, flags_field, gpu_row, log, skip_row, time_gpu)
from gpu_suites import cpu_ffts
from lama_fast.benchmark.core import e2e_input, uint8_agreement


def agreement(out: torch.Tensor, ref: torch.Tensor, x: torch.Tensor) -> Dict[str, Any]:
    """uint8 level differences: of the raw outputs, and of the final blended images (pixels in the hole)."""
    mask = x[:, 3:4].double()
    image = x[:, :3].double()

    def final(o):
        return mask * o.double() + (1 - mask) * image

    raw = uint8_agreement(out, ref)
    blended = uint8_agreement(final(out), final(ref))
    return {"raw_u8_max": raw["u8_max_diff"], "raw_within2": raw["u8_within2"],
            "final_u8_max": blended["u8_max_diff"], "final_within2": blended["u8_within2"],
            "final_within1": blended["u8_within1"]}


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

    def optimize(backend: str, dtype: torch.dtype = torch.float32, **options: Any) -> Callable[[], Any]:
        return lambda: lama_fast.optimize(reference, backend=backend, device="cuda", dtype=dtype, **options)

    builders: List[Tuple[str, Optional[str], Callable[[], Any]]] = [
        ("reference graph", None, optimize("reference", cuda_graphs=True))]
    for dtype, name in DTYPES:
        builders += [
            (f"triton {name}", args.triton_skip, optimize("triton", dtype)),
            (f"cuda {name}", args.cuda_skip, optimize("cuda", dtype)),
            (f"cuda {name} eager", args.cuda_skip, optimize("cuda", dtype, cuda_graphs=False)),
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


# What --e2e-systems core keeps: the systems the GPU targets compare (bench/gpu_targets.py); the opt-in
# variants then run in their own pass (the e2e_variants suite).
CORE_SYSTEMS = ("reference eager", REF_GRAPH, TRITON_GRAPH, CUDA_GRAPH)


def profile_forward(rows: Rows, label: str, modules: Dict[str, Any], problems: Dict[str, str], x: torch.Tensor,
                    budget: Budget) -> None:
    """One bfloat16 forward of each backend, launched eagerly (graph replays hide their kernels), under
    torch.profiler: GPU time per kernel name (top 15), their total and the number of launches."""
    from torch.profiler import ProfilerActivity, profile

    for backend in ("triton", "cuda"):
        system, key = f"{backend} backend (eager launches)", f"{backend} bfloat16"
        module = modules.get("cuda bfloat16 eager" if backend == "cuda" else key)
        if module is None:
            rows.append(skip_row("e2e_profile", label, system, "bfloat16", problems.get(key, "skipped: not built")))
            continue
        if budget.skipped(rows, "e2e_profile", label, system, "bfloat16"):
            continue
        graphs = getattr(module, "use_cuda_graphs", None)
        try:
            if graphs is not None:
                module.use_cuda_graphs = False
            with torch.no_grad():
                for _ in range(2):
                    module(x)
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    module(x)
                    torch.cuda.synchronize()
            kernels = []
            for event in prof.key_averages():
                gpu_us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0)
                if gpu_us and event.count:
                    kernels.append({"name": event.key[:100], "calls": event.count, "us": gpu_us})
        except Exception as error:
            failed(rows, "e2e_profile", label, system, "bfloat16", error, f"profile {label}")
            continue
        finally:
            if graphs is not None:
                module.use_cuda_graphs = graphs
        kernels.sort(key=lambda k: -k["us"])
        total_us = sum(k["us"] for k in kernels)
        rows.append(gpu_row("e2e_profile", label, system, "bfloat16", kernels=kernels[:15],
                            gpu_ms_total=total_us / 1e3, launches=sum(k["calls"] for k in kernels)))
        log(f"  profile {label} {system} bfloat16: {total_us / 1e3:.2f} ms GPU in "
            f"{sum(k['calls'] for k in kernels)} launches; " +
            "; ".join(f"{k['name'][:40]} {k['us'] / 1e3:.2f} ms" for k in kernels[:5]))


def e2e_suite(args, rows: Rows, save: Callable[[], Any], budget: Budget,
              shapes: Optional[List[Tuple[int, int]]] = None, variants_only: bool = False) -> None:
    """The generator at each of ``shapes`` (default --e2e-sizes), every system (or the core ones), against float64
    and against eager float32; the bfloat16 profile at --e2e-profile's size. ``variants_only``: the opt-in
    variants in bfloat16 alone (eager float32 run, not recorded, for their agreement with it)."""
    from lama_fast.model.random import random_generator

    reference = random_generator("big-lama", seed=0).cuda().eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    compile_labels = set(args.compile_sizes)
    modules, problems = build_systems(reference, args)
    core = getattr(args, "e2e_systems", "all") == "core"
    profile_labels = set(getattr(args, "e2e_profile", []))
    for shape in shapes if shapes is not None else getattr(args, "e2e_shapes", E2E_SHAPES):
        h, w = shape
        label = E2E_LABELS[shape]
        if budget.skipped(rows, "e2e", label, "all systems", "-"):
            log(f"e2e {label}: {budget.reason()}")
            save()
            continue
        x = e2e_input(h, width=w).cuda()
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
            if core and not variants_only and system not in CORE_SYSTEMS:
                return
            if key is not None and key in problems:
                rows.append(skip_row("e2e", label, system, dtype, problems[key]))
                return

            def run():
                torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                out = fn()
                torch.cuda.synchronize()
                first_s = time.perf_counter() - start
                timing = time_gpu(fn, 2, reps)
                out = fn().float().cpu()
                return {**timing, "first_call_s": first_s, "out": out}

            got = attempt(rows, budget, save, ("e2e", label, system, dtype), flags, run)
            if got is None:
                return
            out = got.pop("out")
            row = gpu_row("e2e", label, system, dtype, block="generator", size=[h, w], **got,
                          peak_mem_mib=torch.cuda.max_memory_allocated() / 2 ** 20,
                          max_abs_error_vs_fp64=(out.double() - truth).abs().max().item(),
                          output_std=truth.std().item(), flags=flags_field(flags), note=note,
                          **{f"vs_fp64_{k}": v for k, v in agreement(out, truth, x.cpu()).items()})
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
            log(f"  {label} {system:38s} {dtype:9s} {row['median_ms']:9.2f} ms (first {row['first_call_s']:6.2f} s) "
                f"err {row['max_abs_error_vs_fp64']:.1e} final within 2 of eager "
                f"{row.get('vs_eager_final_within2', 1.0):.5f} peak {row['peak_mem_mib']:.0f} MiB")

        def variant(system, module, key, dtype, name, switch, note):
            """The bfloat16 ``module`` (graphs on) with an opt-in ``switch(module, True)`` on, then off again."""
            if dtype != torch.bfloat16:
                return
            if module is None:
                record(system, name, None, DEFAULT_FLAGS, key=key)  # the module's problem, recorded
                return
            try:
                switch(module, True)
            except Exception as error:
                rows.append(skip_row("e2e", label, system, name, f"failed: switching it on raised {describe(error)}"))
                return
            graphs = module.use_cuda_graphs
            module.use_cuda_graphs = True
            try:
                record(system, name, lambda m=module: m(x), DEFAULT_FLAGS, note, module=module, key=key)
            finally:
                switch(module, False)
                module.use_cuda_graphs = graphs
                release(module)

        def variants(backend, module, key, dtype, name):
            """Every variant of ``backend``'s module, compiled stages last (all systems only; the core set leaves
            them to the variants-only pass)."""
            if core:
                return
            fused_layout(backend, module, key, dtype, name)
            if backend == "triton":
                dft_tc(module, dtype, name)
            compiled_stages(backend, module, key, dtype, name)

        def fused_layout(backend, module, key, dtype, name):
            variant(f"{backend} backend, fused layout (CUDA graph)", module, key, dtype, name,
                    lambda m, on: m.set_layout(on, output_dtype=dtype if on else None),
                    "set_layout(True, output_dtype=bfloat16): reflect pads with the cast as one Triton pass, "
                    "the 7x7 convs padded to 8 channels, the output conv in bfloat16")

        def dft_tc(module, dtype, name):
            variant("triton backend, dft-tc route (CUDA graph)", module, "triton bfloat16", dtype, name,
                    lambda m, on: m.set_route("dft-tc" if on else "auto"),
                    "set_route('dft-tc'): the Fourier units' DFTs as matrix products on tensor cores, at every map")

        def compiled_stages(backend, module, key, dtype, name):
            variant(f"{backend} backend, compiled stages (CUDA graph)", module, key, dtype, name,
                    lambda m, on: m.set_compiled(on),
                    "set_compiled(True): torch.compile (inductor) of everything but the spectral ops; the first "
                    "call's time includes the compilation")

        if variants_only:
            with torch.no_grad(), Flags(*DEFAULT_FLAGS):
                eager_out = reference(x).float().cpu()
            for backend in ("cuda", "triton"):
                fused_layout(backend, modules.get(f"{backend} bfloat16"), f"{backend} bfloat16", torch.bfloat16,
                             "bfloat16")
            dft_tc(modules.get("triton bfloat16"), torch.bfloat16, "bfloat16")
            # Compiling takes tens of seconds a shape: last.
            compiled_stages("triton", modules.get("triton bfloat16"), "triton bfloat16", torch.bfloat16, "bfloat16")
            torch.cuda.empty_cache()
            save()
            continue
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
            variants("cuda", graphed, f"cuda {name}", dtype, name)
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
            variants("triton", module, key, dtype, name)
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
        if label.split(" ")[0] in profile_labels:
            profile_forward(rows, label, modules, problems, x, budget)
        save()
