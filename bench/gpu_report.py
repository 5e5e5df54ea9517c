"""The GPU benchmark's markdown report: the op and end-to-end comparisons, every row, what was not measured."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence

from gpu_common import CUDA_EAGER, CUDA_GRAPH, CUDA_OP, CUDA_OP_TF32, REF_GRAPH, TRITON_GRAPH


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


def _section(title: str, comparison: List[str], headers: Sequence[str]) -> List[str]:
    """A section: its title, its comparison tables, then the header of its table of every row."""
    return [title, "", *comparison, "### Every row", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]


def markdown(rows: List[Dict[str, Any]], info: Dict[str, Any], crossover: Optional[Dict[str, Any]]) -> str:
    lines = [f"# lama_fast GPU benchmarks: {info['gpu']}", "",
             f"torch {info['torch']}, triton {info['triton']}, CUDA {info['cuda']}, cuDNN {info['cudnn']}, "
             f"Python {info['python']}, {info['sms']} SMs, {info['gpu_memory_gib']} GiB; {info['date']}. "
             "Times are medians of CUDA-event timings per call (eager launches), and of CUDA-graph replays "
             "where a graph column is given. Batch 1, big-lama, random weights (lama_fast.model.random).", ""]
    lines += header_lines(info)
    kernel = [r for r in rows if r["suite"] == "kernel" and r["status"] == "ok"]
    if kernel:
        lines += _section("## Spectral transform 384 -> 384", kernel_comparison(kernel), (
            "map", "system", "dtype", "median ms", "graph ms (speed-up)", "speed-up vs reference eager fp32",
            "max scaled error vs fp64"))
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
        lines += _section("## End to end (generator forward)", e2e_comparison(e2e), (
            "image", "system", "dtype", "median ms", "speed-up vs eager fp32", "speed-up vs reference CUDA graph",
            "first call s", "peak MiB", "max abs err vs fp64 (output std)", "final image within 2 levels of eager fp32"))
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
    forward = [r for r in rows if r["suite"] == "e2e_profile" and r["status"] == "ok"]
    if forward:
        lines += ["## Where one bfloat16 forward spends its GPU time (torch.profiler, eager launches)", ""]
        for r in forward:
            lines.append(f"- {r['shape']} {r['system']}: {r['gpu_ms_total']:.2f} ms of GPU time in {r['launches']} "
                         "launches; " + "; ".join(f"`{k['name'][:60]}` x{k['calls']} {k['us'] / 1e3:.2f} ms"
                                                  for k in r["kernels"][:10]))
        lines.append("")
    missing = [r for r in rows if r["status"] != "ok" and r["suite"] != "e2e"]
    skipped_suites = info.get("suites_skipped") or {}
    if missing or skipped_suites:
        lines += ["## Not measured", ""]
        lines += [f"- suite {suite}: {why}" for suite, why in skipped_suites.items()]
        lines += [f"- {r['suite']} {r['shape']} {r['system']} {r['dtype']}: {r['status']}" for r in missing]
        lines.append("")
    return "\n".join(lines)

