"""The lean CPU path, measured side by side: speed against torch.compile, peak memory against eager, the copies
left in a forward, first call against steady state, and batch throughput by threading layout.

One run writes ``bench/results/cpu_lean.json`` (every row and figure) and ``bench/results/cpu_lean.md`` (the
tables, also printed). Every end-to-end row runs in a fresh process (``lama_fast.benchmark``'s isolated jobs:
big-lama with seeded random weights, the harness's 1x4xSxS input, the float64 and eager float32 outputs it
caches), so that its peak resident memory is its own:

1. **speed**: ``--runs`` separate runs at 512², each in ABBA order (ours, torch.compile, torch.compile, ours)
   followed by eager; the ratio of each run is ours' median over compile's, both from that run;
2. **memory**: eager and ours at 2048² (one row each), beside the 512² rows of the speed runs;
3. **first call**: ours at 256² (and the 512² rows above): the first call after the build over the median;
4. **profile**: one 512² forward under ``torch.profiler`` (after two warm-up calls, in this process): every
   ``aten::copy_``, ``fill_`` and ``zero_`` with its shape, and the time per op;
5. **throughput**: ``--images`` images at 512² through one ``FastGenerator``, one image at a time with all
   threads, against one image per core in flight (a thread per core, one torch thread each).

bfloat16 rows are attempted as well; on a CPU without bfloat16 instructions the cpu backend refuses
bfloat16 and the row says so.

    .venv/bin/python bench/lean_bench.py             # the whole run, about 30 minutes on 2 cores
    .venv/bin/python bench/lean_bench.py --quick     # a smoke run at small sizes, results in a temp folder
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from lama_fast.benchmark.core import machine_info, peak_rss_bytes  # noqa: E402
from lama_fast.benchmark.run import run_job  # noqa: E402

MIB = 1 << 20
COUNTED_OPS = ("aten::copy_", "aten::fill_", "aten::zero_")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def e2e_spec(size: int, system: str, args: argparse.Namespace, run_id: str, repeats: int) -> Dict[str, Any]:
    dtype = "bfloat16" if system.endswith("-bf16") else "float32"
    return {"job": "e2e", "suite": "e2e", "block": "generator", "size": size, "shape": f"1x4x{size}x{size}",
            "model": "big-lama", "checkpoint": None, "device": "cpu", "system": system, "dtype": dtype,
            "repeats": repeats, "warmup": 1, "seed": 0, "parity": True, "run_id": run_id,
            "cache_dir": str(args.cache_dir)}


def reference(size: int, args: argparse.Namespace) -> None:
    """The float64 (and eager float32) outputs at ``size``, cached for the parity columns."""
    spec = {**e2e_spec(size, "eager", args, "reference", 1), "job": "reference", "need_float32": True}
    row = run_job(spec, isolate=True)
    log(f"reference outputs at {size}²: {row.get('status')} ({', '.join(row.get('computed') or []) or 'cached'})")


def e2e_row(size: int, system: str, args: argparse.Namespace, run_id: str, repeats: int, part: str) -> Dict:
    log(f"{part}: {system} at {size}² ...")
    row = run_job(e2e_spec(size, system, args, run_id, repeats), isolate=True, timeout_s=args.job_timeout)
    row["part"] = part
    summary = row.get("status")
    if row.get("status") == "ok":
        summary = (f"median {row['median_s']:.3f} s, first call {row['first_call_s']:.3f} s, "
                   f"peak RSS {row['peak_rss_bytes'] / MIB:.0f} MiB")
    log(f"{part}: {system} at {size}²: {summary}")
    return row


# --- the profile --------------------------------------------------------------------------------------------

def profile_forward(size: int) -> Dict[str, Any]:
    """The ops of one ``size``² forward of ours (float32) after two warm-up calls."""
    from torch.profiler import ProfilerActivity, profile

    from lama_fast.benchmark.core import e2e_input
    from lama_fast.benchmark.e2e import load_reference_generator
    from lama_fast.fast import build_fast_generator

    fast = build_fast_generator(load_reference_generator("big-lama", None, 0), torch.float32)
    x = e2e_input(size, 0)
    fast(x)
    fast(x)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        fast(x)
    movements = [{"op": e.name, "shapes": [list(s) for s in e.input_shapes if s][:2],
                  "ms": e.cpu_time_total / 1e3} for e in prof.events() if e.name in COUNTED_OPS]
    totals = sorted(((e.key, e.count, e.self_cpu_time_total / 1e3) for e in prof.key_averages()),
                    key=lambda item: -item[2])
    return {"part": "profile", "size": size, "movements": movements,
            "ops": [{"op": op, "calls": calls, "self_ms": ms} for op, calls, ms in totals if ms >= 0.5]}


# --- throughput ---------------------------------------------------------------------------------------------

def throughput_worker(mode: str, size: int, images: int) -> Dict[str, Any]:
    """``images`` calls at ``size``² through one FastGenerator: "serial" (all threads) or "per-core"."""
    from lama_fast.benchmark.core import e2e_input
    from lama_fast.benchmark.e2e import load_reference_generator
    from lama_fast.fast import build_fast_generator

    cores = torch.get_num_threads()
    fast = build_fast_generator(load_reference_generator("big-lama", None, 0), torch.float32)
    inputs = [e2e_input(size, seed) for seed in range(images)]
    lanes = 1 if mode == "serial" else cores
    # Warm-up: one call on every lane, as the timed loop will run it.
    outputs: List[Optional[torch.Tensor]] = [None] * images

    def lane(index: int, jobs: List[int]) -> None:
        if mode != "serial":
            torch.set_num_threads(1)
        for job in jobs:
            outputs[job] = fast(inputs[job])

    def run(jobs: List[int]) -> float:
        shares = [jobs[i::lanes] for i in range(lanes)]
        start = time.perf_counter()
        threads = [threading.Thread(target=lane, args=(i, share)) for i, share in enumerate(shares)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start

    run(list(range(lanes)))
    wall = run(list(range(images)))
    serial = [fast(inputs[i]) for i in range(min(2, images))] if mode != "serial" else []
    same = all(torch.equal(a, outputs[i]) for i, a in enumerate(serial))
    return {"part": "throughput", "mode": mode, "size": size, "images": images, "lanes": lanes,
            "threads_per_lane": cores if mode == "serial" else 1, "wall_s": wall, "images_per_s": images / wall,
            "peak_rss_bytes": peak_rss_bytes(), "equal_to_serial": same if serial else None}


def throughput(mode: str, size: int, images: int) -> Dict[str, Any]:
    log(f"throughput: {mode}, {images} images at {size}² ...")
    out = subprocess.run([sys.executable, __file__, "--throughput-worker", mode, str(size), str(images)],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        return {"part": "throughput", "mode": mode, "status": f"error: {out.stderr.strip().splitlines()[-1:]}"}
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["status"] = "ok"
    log(f"throughput: {mode}: {row['images_per_s']:.3f} images/s, peak RSS {row['peak_rss_bytes'] / MIB:.0f} MiB")
    return row


# --- the report -----------------------------------------------------------------------------------------------

def _ok(row: Dict[str, Any]) -> bool:
    return row.get("status") == "ok"


def _fmt(value: Optional[float], spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def report(rows: List[Dict[str, Any]], machine: Dict[str, str], started: str) -> str:
    lines = ["# The lean CPU path: speed, memory, copies, first call, throughput", "",
             f"Machine: {machine.get('cpu', '?')}, {machine.get('threads', '?')} threads, CPU flags: "
             f"{machine.get('cpu_flags', '-')}; torch {machine.get('torch', '?')}. Run started {started}. "
             "Big-lama with seeded random weights; every end-to-end row in a fresh process "
             "(`bench/lean_bench.py`). Times are comparable within one run only.", ""]
    speed = [r for r in rows if r.get("part", "").startswith("speed")]
    lines += ["## 512² float32: ours against torch.compile, ABBA order in each run", "",
              "| run | system | median s | spread s | first call s | peak RSS MiB | max abs err vs f64 | output std "
              "| uint8 ≤1 level % | status |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in speed:
        lines.append(
            f"| {r['part']} | {r['system']} | {_fmt(r.get('median_s'))} | {_fmt(r.get('spread_s'))} "
            f"| {_fmt(r.get('first_call_s'))} | {_fmt((r.get('peak_rss_bytes') or 0) / MIB, '.0f')} "
            f"| {_fmt(r.get('max_abs_err'), '.1e')} | {_fmt(r.get('output_std'), '.4f')} "
            f"| {_fmt(None if r.get('u8_within1') is None else 100 * r['u8_within1'], '.2f')} | {r.get('status')} |")
    lines += ["", "| run | ours median s (both) | compile median s (both) | ours ÷ compile | ours ÷ eager |",
              "|---|---|---|---|---|"]
    for part in sorted({r["part"] for r in speed}):
        def medians(system: str) -> List[float]:
            return [r["median_s"] for r in speed if r["part"] == part and r["system"] == system and _ok(r)]
        ours, compiled, eager = medians("ours-f32"), medians("compile"), medians("eager")
        if ours and compiled:
            ratio = statistics.mean(ours) / statistics.mean(compiled)
            vs_eager = statistics.mean(ours) / statistics.mean(eager) if eager else None
            lines.append(f"| {part} | {' / '.join(f'{v:.3f}' for v in ours)} | "
                         f"{' / '.join(f'{v:.3f}' for v in compiled)} | {ratio:.2f}× | {_fmt(vs_eager, '.2f')}× |")
    memory = [r for r in rows if r.get("part") in ("memory", "first-call") or r.get("part", "").startswith("speed")]
    lines += ["", "## Peak resident memory and first call", "",
              "| size | system | peak RSS MiB | ÷ eager's (same size) | first call s | median s | first ÷ median |",
              "|---|---|---|---|---|---|---|"]
    eager_rss: Dict[int, List[float]] = {}
    for r in memory:
        if _ok(r) and r["system"] == "eager":
            eager_rss.setdefault(r["size"], []).append(r["peak_rss_bytes"])
    seen = set()
    for r in memory:
        key = (r.get("size"), r.get("system"), r.get("part"))
        if key in seen or not _ok(r):
            continue
        seen.add(key)
        base = statistics.mean(eager_rss[r["size"]]) if eager_rss.get(r["size"]) else None
        lines.append(f"| {r['size']}² | {r['system']} ({r['part']}) | {r['peak_rss_bytes'] / MIB:.0f} "
                     f"| {_fmt(r['peak_rss_bytes'] / base if base else None, '.2f')} | {r['first_call_s']:.3f} "
                     f"| {r['median_s']:.3f} | {r['first_call_s'] / r['median_s']:.2f} |")
    for r in rows:
        if r.get("part") in ("memory", "speed 1") and r.get("system", "").endswith("-bf16") and not _ok(r):
            lines.append(f"\nbfloat16 ({r['size']}²): {r.get('status')}")
    profile = next((r for r in rows if r.get("part") == "profile"), None)
    if profile:
        lines += ["", f"## Data movement in one {profile['size']}² forward (torch.profiler)", "",
                  "Every `aten::copy_`, `aten::fill_` and `aten::zero_` call, by op and shape (`zero_` "
                  "calls `fill_`: both are listed, with the same time):", "",
                  "| op | shapes | calls | total ms |", "|---|---|---|---|"]
        grouped: Dict[tuple, List[float]] = {}
        for m in profile["movements"]:
            grouped.setdefault((m["op"], str(m["shapes"])), []).append(m["ms"])
        for (op, shapes), times in grouped.items():
            lines.append(f"| {op} | {shapes} | {len(times)} | {sum(times):.2f} |")
        lines += ["", "Ops by self time:", "", "| op | calls | self ms |", "|---|---|---|"]
        for op in profile["ops"][:14]:
            lines.append(f"| `{op['op']}` | {op['calls']} | {op['self_ms']:.1f} |")
    flows = [r for r in rows if r.get("part") == "throughput"]
    if flows:
        lines += ["", f"## Batch throughput at {flows[0].get('size', '?')}² (one FastGenerator, one process)", "",
                  "| layout | lanes × torch threads | images | wall s | images/s | peak RSS MiB | same output |",
                  "|---|---|---|---|---|---|---|"]
        for r in flows:
            if not _ok(r):
                lines.append(f"| {r['mode']} | — | — | — | — | — | {r.get('status')} |")
                continue
            lines.append(f"| {r['mode']} | {r['lanes']} × {r['threads_per_lane']} | {r['images']} | "
                         f"{r['wall_s']:.1f} | {r['images_per_s']:.3f} | {r['peak_rss_bytes'] / MIB:.0f} | "
                         f"{'—' if r['equal_to_serial'] is None else r['equal_to_serial']} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="small sizes, one run, results in a temp folder")
    parser.add_argument("--out-dir", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "bench" / ".cache")
    parser.add_argument("--job-timeout", type=float, default=3600.0)
    parser.add_argument("--throughput-worker", nargs=3, metavar=("MODE", "SIZE", "IMAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.throughput_worker:
        mode, size, images = args.throughput_worker
        print(json.dumps(throughput_worker(mode, int(size), int(images))))
        return 0
    out_dir = args.out_dir or (Path(tempfile.mkdtemp(prefix="lean_bench_")) if args.quick else RESULTS)
    speed_size, big, small = (128, 256, 64) if args.quick else (512, 2048, 256)
    runs, repeats = (1, 2) if args.quick else (args.runs, args.repeats)
    images = 4 if args.quick else args.images
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    machine = machine_info()
    rows: List[Dict[str, Any]] = []

    def save() -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "cpu_lean.json").write_text(json.dumps({"machine": machine, "started": started, "rows": rows},
                                                          indent=1, default=str))

    for size in (speed_size, big, small):
        reference(size, args)
    for run in range(1, runs + 1):
        run_id = f"{started}-run{run}"
        for system in ("ours-f32", "compile", "compile", "ours-f32", "eager"):
            rows.append(e2e_row(speed_size, system, args, run_id, repeats, f"speed {run}"))
            save()
    rows.append(e2e_row(speed_size, "ours-bf16", args, f"{started}-bf16", repeats, "speed 1"))
    for system in ("eager", "ours-f32", "ours-bf16"):
        rows.append(e2e_row(big, system, args, f"{started}-memory", 1 if not args.quick else repeats, "memory"))
        save()
    rows.append(e2e_row(small, "ours-f32", args, f"{started}-first", repeats, "first-call"))
    rows.append(e2e_row(small, "eager", args, f"{started}-first", repeats, "first-call"))
    log("profile ...")
    rows.append(profile_forward(speed_size))
    save()
    for mode in ("serial", "per-core"):
        rows.append(throughput(mode, speed_size, images))
        save()
    text = report(rows, machine, started)
    (out_dir / "cpu_lean.md").write_text(text)
    print(text)
    log(f"wrote {out_dir / 'cpu_lean.json'} and {out_dir / 'cpu_lean.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
