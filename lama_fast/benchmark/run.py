"""A run of ``lama-fast bench``: jobs, each in a process of its own or in this one, and the rows they make.

A *job* computes one row; with ``isolate=True`` each job runs in a fresh
interpreter (``python -m lama_fast.benchmark --job SPEC.json``) so that its
peak resident memory is its own.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .blocks import attach_roofline, block_flops, kernel_shape, run_kernel_job, run_rates_job
from .core import dtype_from_name, dtype_name, error_status, machine_info, package_env, run_worker, timed_row
from .e2e import reference_cache_paths, run_e2e_job, run_reference_job
from .plan import KERNEL_SYSTEMS, BenchConfig
from .systems import system_dtype

Progress = Callable[[str], None]

JOBS: Dict[str, Callable[[Mapping[str, Any]], Dict[str, Any]]] = {
    "kernel": run_kernel_job,
    "rates": run_rates_job,
    "reference": run_reference_job,
    "e2e": run_e2e_job,
}


def execute_job(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """Run one job in this process; an unexpected exception becomes an ``error: ...`` row."""
    try:
        return JOBS[spec["job"]](spec)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        row = timed_row(spec)
        row["status"] = error_status(exc)
        return row


def run_job(spec: Mapping[str, Any], isolate: bool = True, timeout_s: Optional[float] = None) -> Dict[str, Any]:
    """Run one job, in a fresh interpreter when ``isolate``; a crash or timeout becomes an ``error`` row."""
    spec = {**spec, "isolated": bool(isolate)}
    if not isolate:
        return execute_job(spec)
    with tempfile.TemporaryDirectory(prefix="lama_fast_bench_") as tmp:
        job_path = os.path.join(tmp, "job.json")
        with open(job_path, "w") as f:
            json.dump(spec, f)
        worker = run_worker([sys.executable, "-m", "lama_fast.benchmark", "--job", job_path], timeout_s,
                            env=package_env())
    if worker.ok:
        return worker.row
    tail = (worker.stdout + worker.stderr)[-4000:]
    if tail.strip():
        print(tail, file=sys.stderr)
    row = timed_row(spec)
    row["status"] = f"error: {worker.failure(timeout_s)}"
    return row


def add_speedups(rows: List[Dict[str, Any]]) -> None:
    """Set speedup_vs_eager and speedup_vs_compile (baseline median / row median) within each run."""
    medians: Dict[Tuple[Any, ...], float] = {}
    for row in rows:
        if row.get("status") == "ok" and row.get("median_s"):
            medians[(row.get("run_id"), row.get("suite"), row.get("block"), row.get("size"), row.get("system"))] = \
                row["median_s"]
    for row in rows:
        if row.get("status") != "ok" or not row.get("median_s"):
            continue
        key = (row.get("run_id"), row.get("suite"), row.get("block"), row.get("size"))
        for baseline in ("eager", "compile"):
            if key + (baseline,) in medians:
                row[f"speedup_vs_{baseline}"] = medians[key + (baseline,)] / row["median_s"]


# Nominal seconds on a 2-core Zen 4 (see DESIGN.md); only for the duration estimate printed before a run.
_EAGER_512_S = 3.2
_E2E_FACTOR = {"eager": 1.0, "channels_last": 0.8, "compile": 0.75, "openvino-f32": 1.0, "openvino-bf16": 0.6,
               "onnxruntime": 1.25, "ours-f32": 0.6, "ours-bf16": 0.45}
_E2E_SETUP_S = {"compile": 60.0, "openvino-f32": 28.0, "openvino-bf16": 28.0, "onnxruntime": 30.0}
_KERNEL_64_S = {"fourier_unit": 0.006, "spectral_transform": 0.0127, "ffc_layer": 0.055}
_WORKER_START_S = 3.0


def _eager_call_s(size: int, model: Any) -> float:
    scale = (size / 512) ** 2 * (1 + 0.28 * max(0.0, math.log2(size / 512)))
    blocks = 18
    if isinstance(model, str) and model == "lama-fourier":
        blocks = 9
    elif isinstance(model, Mapping):
        blocks = int(model.get("n_blocks", 18)) * (int(model.get("ngf", 64)) / 64) ** 2
    return _EAGER_512_S * scale * (0.15 + 0.85 * blocks / 18)


def estimate_seconds(kernel_sizes: Sequence[int], e2e_plan: Sequence[Tuple[int, Sequence[str]]],
                     config: BenchConfig, kernel_systems: Sequence[str] = KERNEL_SYSTEMS) -> float:
    """A rough duration of a run, from nominal 2-core timings scaled by this machine's thread count."""
    calls = config.warmup + config.repeats
    total = 0.0
    for size in kernel_sizes:
        total += _WORKER_START_S + 1.0
        for block in config.blocks:
            per_call = _KERNEL_64_S.get(block, 0.05) * (size / 64) ** 2 * (1 + 0.3 * math.log2(max(1, size / 64)))
            total += len(kernel_systems) * (_WORKER_START_S + calls * per_call) + (3 * per_call if config.parity else 0)
    cache_dir = Path(config.cache_dir)
    for size, systems in e2e_plan:
        eager = _eager_call_s(size, config.model)
        if config.parity:
            paths = reference_cache_paths(cache_dir, config.model, config.checkpoint, config.seed, size)
            if not paths["float64"].is_file():
                total += _WORKER_START_S + 2.5 * eager
        for system in systems:
            factor = _E2E_FACTOR.get(system, 1.0)
            setup = _E2E_SETUP_S.get(system, 0.0) * (1 + 0.5 * max(0.0, math.log2(size / 512)))
            traced = eager if system.startswith(("openvino", "onnx")) else 0.0
            total += _WORKER_START_S + setup + traced + calls * factor * eager
    return total * 2 / max(1, torch.get_num_threads())


def _default_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _row_summary(row: Mapping[str, Any]) -> str:
    if row.get("status") != "ok":
        return row.get("status", "?")
    parts = [f"median {row['median_s']:.4g} s", f"first call {row['first_call_s']:.4g} s"]
    if row.get("build_s"):
        parts.append(f"build {row['build_s']:.3g} s")
    if row.get("max_abs_err") is not None:
        parts.append(f"max abs err {row['max_abs_err']:.2e}")
    if row.get("peak_rss_bytes"):
        parts.append(f"peak RSS {row['peak_rss_bytes'] / 2**20:.0f} MiB")
    return ", ".join(parts)


def run_benchmarks(kernel_sizes: Sequence[int] = (), e2e_plan: Sequence[Tuple[int, Sequence[str]]] = (),
                   config: Optional[BenchConfig] = None, kernel_systems: Sequence[str] = KERNEL_SYSTEMS,
                   progress: Optional[Progress] = _default_progress,
                   on_row: Optional[Callable[[List[Dict[str, Any]]], None]] = None) -> List[Dict[str, Any]]:
    """Run the kernel suite at ``kernel_sizes`` and the end-to-end plan [(size, systems)]; returns the rows.

    Every row carries the machine and a ``run_id`` shared by the rows of this
    call, and the speed-ups against eager and torch.compile of the same run.
    ``on_row(rows_so_far)`` is called after each row, so a long run can save
    what it has.
    """
    config = config or BenchConfig()
    say = progress or (lambda message: None)
    machine = machine_info()
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S") + f"-{os.getpid()}"
    started = time.perf_counter()
    kernel_jobs = len(kernel_sizes) * len(config.blocks) * len(kernel_systems)
    e2e_jobs = sum(len(systems) for _, systems in e2e_plan)
    total_jobs = kernel_jobs + e2e_jobs
    estimate = estimate_seconds(kernel_sizes, e2e_plan, config, kernel_systems)
    say(f"benchmark: {kernel_jobs} kernel rows, {e2e_jobs} end-to-end rows, expected duration about "
        f"{_fmt_duration(estimate)} ({'a subprocess per row' if config.isolate else 'in this process'})")
    common = {"repeats": config.repeats, "warmup": config.warmup, "seed": config.seed, "parity": config.parity,
              "run_id": run_id, "cache_dir": str(config.cache_dir)}
    rows: List[Dict[str, Any]] = []
    done = 0

    def job(spec: Dict[str, Any]) -> Dict[str, Any]:
        return run_job(spec, config.isolate, config.job_timeout_s)

    def add_row(spec: Dict[str, Any], label: str, rates: Optional[Mapping[str, Any]] = None) -> None:
        nonlocal done
        done += 1
        say(f"[{done}/{total_jobs} {_fmt_duration(time.perf_counter() - started)}] {label}: start")
        job_start = time.perf_counter()
        row = job(spec)
        row["machine"] = machine
        say(f"[{done}/{total_jobs} {_fmt_duration(time.perf_counter() - started)}] {label}: done in "
            f"{_fmt_duration(time.perf_counter() - job_start)}: {_row_summary(row)}")
        if rates is not None:
            attach_roofline(row, rates, block_flops(spec["block"], spec["size"]))
        rows.append(row)
        add_speedups(rows)
        if on_row:
            on_row(rows)

    for size in kernel_sizes:
        say(f"kernels {size}x{size}: measuring the sgemm / oneDNN rates and the FFT time")
        rates = job({**common, "job": "rates", "suite": "kernels", "size": size})
        for block in config.blocks:
            for system in kernel_systems:
                spec = {**common, "job": "kernel", "suite": "kernels", "block": block, "size": size,
                        "shape": kernel_shape(block, size), "system": system, "dtype": "float32"}
                add_row(spec, f"kernels {block} {size}x{size} {system}", rates)

    for size, systems in e2e_plan:
        shape = f"1x4x{size}x{size}"
        e2e_common = {**common, "suite": "e2e", "block": "generator", "size": size, "shape": shape,
                      "model": config.model, "checkpoint": config.checkpoint, "device": config.device}
        if config.parity:
            say(f"e2e {size}x{size}: float64 reference output (cached in {config.cache_dir})")
            ref_start = time.perf_counter()
            result = job({**e2e_common, "job": "reference", "need_float32": "eager" not in systems})
            if result.get("status") != "ok":
                say(f"e2e {size}x{size}: the reference output failed ({result.get('status')}); rows lack parity")
            else:
                what = ", ".join(result.get("computed") or []) or "all cached"
                say(f"e2e {size}x{size}: reference outputs ready ({what}) in "
                    f"{_fmt_duration(time.perf_counter() - ref_start)}")
        # Eager first: its output is the float32 reference of the uint8 check.
        for system in sorted(systems, key=lambda s: s != "eager"):
            spec = {**e2e_common, "job": "e2e", "system": system,
                    "dtype": dtype_name(system_dtype(system, dtype_from_name(config.dtype)))}
            add_row(spec, f"e2e {system} {size}x{size}")

    add_speedups(rows)
    say(f"benchmark: {len(rows)} rows in {_fmt_duration(time.perf_counter() - started)} "
        f"(estimated {_fmt_duration(estimate)})")
    return rows
