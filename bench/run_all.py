#!/usr/bin/env python
"""The full CPU benchmark: kernel blocks and the end-to-end generator against peers.

Writes ``bench/results/cpu.json`` (every row), ``bench/results/cpu.md`` (a table
per suite with speed-ups from the same run) and ``bench/results/cpu_e2e.png``
(time against resolution, log-log).  Progress goes to stderr.

    .venv/bin/python bench/run_all.py                      # kernels + e2e at 512, 1024 (all systems), 2048 (ours, eager, channels_last)
    .venv/bin/python bench/run_all.py --peers-at-2048      # torch.compile, OpenVINO and ONNX Runtime at 2048 too
    .venv/bin/python bench/run_all.py --suite e2e --sizes 512 --systems eager,ours
    .venv/bin/python bench/run_all.py --dry-run            # the plan and its expected duration only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lama_fast import benchmark  # noqa: E402
from lama_fast._io import atomic_write_bytes  # noqa: E402
from lama_fast.cli.common import parse_sizes  # noqa: E402

BIG_SIZE = 2048


def build_parser() -> argparse.ArgumentParser:
    """Options of the full benchmark run."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=("kernels", "e2e", "all"), default="all")
    p.add_argument("--sizes", type=parse_sizes, default=[512, 1024, BIG_SIZE], help="end-to-end sizes (default 512,1024,2048)")
    p.add_argument("--kernel-sizes", type=parse_sizes, default=list(benchmark.KERNEL_SIZES),
                   help="kernel spatial sizes (default 64,128,256: the 1/8 maps of 512, 1024, 2048 inputs)")
    p.add_argument("--systems", help="comma-separated systems or aliases (default: all of each suite)")
    p.add_argument("--peers-at-2048", action="store_true",
                   help="also run torch.compile, OpenVINO and ONNX Runtime at 2048 (a compile or convert each, "
                        "and minutes per call)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing, the first call included")
    p.add_argument("--model", default="big-lama", choices=("big-lama", "lama-fourier"))
    p.add_argument("--checkpoint", help="real weights instead of seeded random ones")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    p.add_argument("--name", default="cpu", help="file stem of the results (default cpu: cpu.json, cpu.md, cpu_e2e.png)")
    p.add_argument("--append", action="store_true", help="append to NAME.json instead of replacing it")
    p.add_argument("--cache-dir", default=str(ROOT / "bench" / ".cache"))
    p.add_argument("--job-timeout", type=float, help="stop one row's subprocess after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the expected duration, run nothing")
    return p


def plan_from_args(args):
    """(kernel sizes, kernel systems, [(e2e size, systems)]) for the options."""
    names = args.systems.split(",") if args.systems else None
    kernel_systems = benchmark.expand_systems("kernels", names) if args.suite in ("kernels", "all") else []
    e2e_systems = benchmark.expand_systems("e2e", names) if args.suite in ("e2e", "all") else []
    kernel_sizes = args.kernel_sizes if kernel_systems else []
    plan = []
    for size in args.sizes:
        systems = list(e2e_systems)
        if size >= BIG_SIZE and not args.peers_at_2048:
            systems = [s for s in systems if s not in benchmark.PEER_SYSTEMS]
        if systems:
            plan.append((size, systems))
    return kernel_sizes, kernel_systems, plan


def main(argv=None) -> int:
    """Run the plan and write NAME.json, NAME.md and NAME_e2e.png under --out-dir."""
    args = build_parser().parse_args(argv)
    if args.repeats < 1 or args.warmup < 1:
        print("--repeats and --warmup must be at least 1", file=sys.stderr)
        return 2
    try:
        kernel_sizes, kernel_systems, plan = plan_from_args(args)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    config = benchmark.BenchConfig(model=args.model, checkpoint=args.checkpoint, seed=args.seed,
                                   repeats=args.repeats, warmup=args.warmup, cache_dir=args.cache_dir,
                                   job_timeout_s=args.job_timeout)
    estimate = benchmark.estimate_seconds(kernel_sizes, plan, config, kernel_systems)
    print(f"plan: kernels {kernel_sizes or '-'} x {', '.join(kernel_systems) or '-'}", file=sys.stderr)
    for size, systems in plan:
        print(f"plan: e2e {size}x{size}: {', '.join(systems)}", file=sys.stderr)
    print(f"expected duration about {estimate / 60:.0f} min (nominal 2-core figures)", file=sys.stderr)
    if args.dry_run:
        return 0

    out_dir = Path(args.out_dir)
    json_path, md_path, png_path = (out_dir / f"{args.name}.json", out_dir / f"{args.name}.md",
                                    out_dir / f"{args.name}_e2e.png")
    previous = []
    if args.append and json_path.exists():
        previous = json.loads(json_path.read_text())

    def save(rows) -> None:
        atomic_write_bytes(json_path, json.dumps(previous + list(rows), indent=1).encode())
        atomic_write_bytes(md_path, benchmark.markdown_report(rows).encode())

    rows = benchmark.run_benchmarks(kernel_sizes, plan, config, kernel_systems, on_row=save)
    save(rows)
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    try:
        if benchmark.plot_e2e(rows, png_path):
            print(f"wrote {png_path}", file=sys.stderr)
    except ImportError:
        print(f"no plot: matplotlib is not installed ({benchmark.BENCH_EXTRA})", file=sys.stderr)
    print(benchmark.markdown_report(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
