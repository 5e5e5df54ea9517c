"""``lama-fast bench``: lama_fast's backends end to end, or the kernel and end-to-end suites with peers."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, List

import torch

from .._io import atomic_write_bytes
from .common import (
    CliError, checkpoint_file, dtype_name, input_file, model_options, output_file, output_location, parse_sizes,
    print_table, progress, runnable_backends, writing,
)


def cmd_bench(args) -> int:
    from .. import benchmark

    if args.suite is None and (args.systems or args.markdown or args.plot):
        raise CliError("--systems, --markdown and --plot go with --suite kernels|e2e|all")
    if args.suite is not None and args.backends is not None:
        raise CliError("--backends selects lama_fast backends for the plain end-to-end timing; with --suite use "
                       "--systems (e.g. backend:reference, ours, eager, compile)")
    if args.repeats < 1 or args.warmup < 1:
        raise CliError("--repeats and --warmup must be at least 1 (the warm-up count includes the first call)")
    if args.checkpoint:
        checkpoint_file(args.checkpoint)
    if args.json:
        if os.path.lexists(args.json):
            input_file(args.json, "--json file", "a JSON file to append the rows to")
        output_location(Path(args.json), "--json file")
    for flag, target in (("--markdown", args.markdown), ("--plot", args.plot)):
        if target:
            output_file(Path(target), f"{flag} file", "give a file name")
    config = benchmark.BenchConfig(
        model=args.model, checkpoint=args.checkpoint, seed=args.seed, repeats=args.repeats, warmup=args.warmup,
        isolate=args.isolate if args.suite is not None else False, parity=args.suite is not None and args.parity,
        cache_dir=args.cache_dir, dtype=benchmark.dtype_name(args.dtype), device=args.device,
        job_timeout_s=args.job_timeout,
    )
    if args.suite is None:
        return _bench_backends(args, config)
    return _bench_suites(args, config)


def _bench_backends(args, config) -> int:
    """The plain end-to-end timing of lama_fast's own backends, in this process."""
    from .. import benchmark
    from ..backends import BACKENDS

    if args.backends in (None, "all"):
        names = runnable_backends(args.device, args.dtype)
    else:
        names = [b for b in args.backends.split(",") if b]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise CliError(f"unknown backend(s) {', '.join(unknown)}; known: {', '.join(BACKENDS)}")
    if not names:
        raise CliError(f"no backend can run on {args.device} in {dtype_name(args.dtype)}")
    plan = [(size, [f"backend:{n}" for n in names]) for size in (args.sizes or [512])]
    rows = benchmark.run_benchmarks((), plan, config, progress=progress)
    failed = [r for r in rows if r["status"] != "ok"]
    for row in failed:
        print(f"{row['system']} at {row['size']}x{row['size']}: {row['status']}", file=sys.stderr)
    machine = benchmark.machine_info()
    print(f"end-to-end generator time, batch 1, on {machine['cpu']} ({machine['threads']} threads), "
          f"torch {machine['torch']}")
    print_table(("backend", "size", "dtype", "first call s", "median s", "spread s", "runs"), [
        (r["backend"], f"{r['size']}x{r['size']}", r["dtype"], f"{r['first_call_s']:.3f}", f"{r['median_s']:.3f}",
         f"{r['spread_s']:.3f}", str(len(r["runs_s"]))) for r in rows if r["status"] == "ok"])
    _append_json(args, rows)
    return 1 if failed else 0


def _bench_suites(args, config) -> int:
    """The kernel and/or end-to-end suites against peers, each row in its own subprocess unless --in-process."""
    from .. import benchmark

    if torch.device(args.device).type != "cpu":
        raise CliError("the kernel and end-to-end suites measure the CPU; use --device cpu")
    suites = benchmark.SUITES if args.suite == "all" else (args.suite,)
    names = args.systems.split(",") if args.systems else None
    try:
        kernel_systems = benchmark.expand_systems("kernels", names) if "kernels" in suites else []
        e2e_systems = benchmark.expand_systems("e2e", names) if "e2e" in suites else []
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.suite == "kernels":
        kernel_sizes = args.sizes or list(benchmark.KERNEL_SIZES)
    else:
        kernel_sizes = args.kernel_sizes or list(benchmark.KERNEL_SIZES)
    kernel_sizes = kernel_sizes if kernel_systems else []
    e2e_sizes = (args.sizes or [512]) if args.suite != "kernels" else []
    plan = [(size, e2e_systems) for size in e2e_sizes] if e2e_systems else []
    if not kernel_sizes and not plan:
        raise CliError(f"no system of suite {args.suite!r} among --systems {args.systems!r}")
    rows = benchmark.run_benchmarks(kernel_sizes, plan, config, kernel_systems, progress=progress)
    print(benchmark.markdown_report(rows))
    _append_json(args, rows)
    if args.markdown:
        with writing(Path(args.markdown), "--markdown file"):
            atomic_write_bytes(Path(args.markdown), benchmark.markdown_report(rows).encode())
        print(f"wrote {args.markdown}")
    if args.plot:
        try:
            with writing(Path(args.plot), "--plot file"):
                wrote = benchmark.plot_e2e(rows, args.plot)
        except ImportError:
            raise CliError(f"--plot needs matplotlib ({benchmark.BENCH_EXTRA})") from None
        print(f"wrote {args.plot}" if wrote else f"no end-to-end row to plot; {args.plot} not written")
    return 0


def _append_json(args, rows: List[dict]) -> None:
    """With --json, append the rows to that file and say so."""
    from .. import benchmark

    if args.json:
        with writing(Path(args.json), "--json file"):
            benchmark.append_json(rows, args.json)
        print(f"appended {len(rows)} rows to {args.json}")


def add_parser(add_command: Callable[..., argparse.ArgumentParser]) -> None:
    p = add_command("bench",
                    help="timings: lama_fast backends end to end, or the kernel / end-to-end suites with peers")
    model_options(p, "512")
    p.set_defaults(sizes=None)
    p.add_argument("--backends", default=None,
                   help="without --suite: comma-separated lama_fast backend names, or 'all' (the default)")
    p.add_argument("--suite", choices=("kernels", "e2e", "all"),
                   help="kernel blocks (sizes 64,128,256) and/or the end-to-end generator (sizes from --sizes) "
                        "against peers; each row in its own subprocess")
    p.add_argument("--systems", help="with --suite: comma-separated systems (eager, channels_last, ours, compile, "
                                     "openvino-f32, openvino-bf16, onnxruntime, ours-f32, ours-bf16, backend:NAME; "
                                     "aliases ours, openvino, peers, reference, all)")
    p.add_argument("--kernel-sizes", type=parse_sizes, help="with --suite all: the kernel suite's spatial sizes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing, the first call included")
    p.add_argument("--json", help="append the rows to this JSON file")
    p.add_argument("--markdown", help="with --suite: write the report as markdown to this file")
    p.add_argument("--plot", help="with --suite: plot end-to-end time against resolution to this PNG")
    p.add_argument("--cache-dir", default=os.path.join("bench", ".cache"),
                   help="where the float64 reference outputs are cached (default bench/.cache)")
    p.add_argument("--in-process", dest="isolate", action="store_false",
                   help="with --suite: run every row in this process (faster; no peak-memory figures)")
    p.add_argument("--no-parity", dest="parity", action="store_false",
                   help="with --suite: skip the float64 reference and the error columns")
    p.add_argument("--job-timeout", type=float, help="with --suite: stop a row's subprocess after this many seconds")
    p.set_defaults(func=cmd_bench)
