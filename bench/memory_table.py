"""Measure the memory guard's table: the extra resident memory of one big-lama generator call.

Each (backend, dtype, size) runs in a fresh subprocess: the model is built and
prepared, the peak-RSS mark is reset (``/proc/self/clear_refs``), one forward
runs on a 1×4×H×W input, and ``VmHWM - VmRSS(before)`` is the extra memory.
Writes bench/results/memory.json and memory.md and prints the table for
``lama_fast.memory.MEASURED``.  Linux only.

    .venv/bin/python bench/memory_table.py            # the default grid, ~10 minutes on 2 cores
    .venv/bin/python bench/memory_table.py cpu:float32:512x512 reference:float32:1024x1024
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lama_fast.benchmark.core import print_row, proc_status_bytes, reset_peak_rss, run_worker, write_results

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_GRID = [
    *(f"cpu:float32:{s}x{s}" for s in (256, 512, 768, 1024, 1536, 2048)),
    *(f"cpu:bfloat16:{s}x{s}" for s in (512, 1024, 2048)),
    *(f"reference:float32:{s}x{s}" for s in (256, 512, 1024, 2048)),
    # PyTorch's float64 convolution unfolds its input (about 25 kB per pixel, 26 GB at 1024^2), and
    # the cpu backend's float64 mode uses it too, so both stop at 512^2.
    *(f"cpu:float64:{s}x{s}" for s in (256, 512)),
    *(f"reference:float64:{s}x{s}" for s in (256, 384, 512)),
]


def child(backend: str, dtype_name: str, height: int, width: int) -> dict:
    import gc

    import torch

    from lama_fast import optimize
    from lama_fast.model.random import random_generator

    dtype = getattr(torch, dtype_name)
    generator = random_generator("big-lama", seed=0).to(torch.float64 if dtype == torch.float64 else torch.float32)
    module = optimize(generator, backend=backend, dtype=dtype)
    del generator
    gc.collect()
    x = torch.rand(1, 4, height, width, dtype=getattr(module, "io_dtype", dtype))
    reset_peak_rss()
    before = proc_status_bytes("VmRSS")
    start = time.perf_counter()
    with torch.no_grad():
        module(x)
    seconds = time.perf_counter() - start
    peak = proc_status_bytes("VmHWM")
    return dict(backend=backend, dtype=dtype_name, height=height, width=width, pixels=height * width,
                rss_before=before, peak=peak, extra=peak - before, seconds=round(seconds, 3))


def main(specs) -> int:
    rows, failed = [], 0
    for spec in specs:
        backend, dtype_name, size = spec.split(":")
        height, width = (int(v) for v in size.split("x"))
        print(f"measuring {spec} ...", file=sys.stderr, flush=True)
        done = run_worker([sys.executable, __file__, "--child", backend, dtype_name, str(height), str(width)])
        if not done.ok:
            print(f"{spec} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            failed += 1
            continue
        row = done.row
        rows.append(row)
        print(f"  extra {row['extra'] / 2**20:.0f} MiB, {row['extra'] / row['pixels']:.0f} B/pixel", file=sys.stderr)
    machine = write_results(RESULTS / "memory.json", rows)
    lines = [
        "# Extra memory of one big-lama generator call",
        "",
        f"Machine: {machine['cpu']}, {machine.get('threads', '?')} threads, torch {machine.get('torch', '?')}. "
        "Fresh process per row; VmHWM after the call minus VmRSS before it, weights already loaded. "
        "Made by `bench/memory_table.py`; `lama_fast.memory.MEASURED` holds these numbers.",
        "",
        "| backend | dtype | size | extra MiB | bytes per pixel | call s |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['dtype']} | {r['width']}x{r['height']} | {r['extra'] / 2**20:.0f} | "
                     f"{r['extra'] / r['pixels']:.0f} | {r['seconds']:.2f} |")
    (RESULTS / "memory.md").write_text("\n".join(lines) + "\n")
    table = {}
    for r in rows:
        table.setdefault((r["backend"], r["dtype"]), []).append((r["pixels"], r["extra"]))
    print("MEASURED = {")
    for key, points in table.items():
        print(f"    {key!r}: {tuple(sorted(points))!r},")
    print("}")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print_row(child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])))
        sys.exit(0)
    sys.exit(main(sys.argv[1:] or DEFAULT_GRID))
