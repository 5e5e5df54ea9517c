"""Benchmark of refinement (``Inpainter.refine``): the original algorithm as the original runs it against the cpu backend.

One run writes ``bench/results/refine.json`` (every figure) and ``bench/results/refine.md`` (the table, also
printed). Each case runs in a fresh process, one after another, so that its peak resident memory (VmHWM)
is its own:

1. big-lama with seeded random weights (``serve_bench.checkpoint_to_use``: a Lightning ``.ckpt`` read back
   exactly), loaded with ``lama_fast.load(CKPT, backend=...)``;
2. the image ``lama_fast/assets/astronaut.jpg`` resized (bicubic) to the case's size, its hand-drawn mask
   resized (nearest);
3. ``reference``: ``refine`` on the reference model with plain eager autograd, float32 — the original
   ``refine_predict`` computed the way the original computes it (on the CPU);
   ``cpu``: ``refine`` on the cpu backend (the fused forward and its backward kernels), float32;
4. the released settings (15 iterations per scale, lr 0.002, max 3 scales, px_budget 1.8 MP), with
   ``min_side`` chosen for the number of scales the case asks for.

Per case: the load, the refine call's wall time and each scale's, the peak RSS of the process, the CPU time
of everything else on the machine while it ran (a shared machine shows up there), and the output; the
reference and cpu outputs of the same case are compared (uint8 levels).

    .venv/bin/python bench/refine_bench.py            # 1024x768 (2 scales) both ways, then 1600x1125 (3 scales) cpu
    .venv/bin/python bench/refine_bench.py --quick    # a smoke run at 256x192, 3 iterations, results in a temp folder
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from serve_bench import ASSETS, RESULTS, checkpoint_to_use, log, machine_cpu_s  # noqa: E402

# (backend, width, height, min_side, scales): min_side gives that many scales by the original's rule.
FULL_CASES = [
    ("reference", 1024, 768, 512, 2),
    ("cpu", 1024, 768, 512, 2),
    ("cpu", 1600, 1125, 256, 3),
]
QUICK_CASES = [
    ("reference", 256, 192, 128, 2),
    ("cpu", 256, 192, 128, 2),
]


def inputs(width: int, height: int) -> tuple:
    """The astronaut and its mask at ``width`` x ``height`` as uint8 arrays."""
    image = Image.open(ASSETS / "astronaut.jpg").convert("RGB").resize((width, height), Image.BICUBIC)
    mask = Image.open(ASSETS / "astronaut_mask.png").convert("L").resize((width, height), Image.NEAREST)
    return np.asarray(image), np.asarray(mask)


def peak_rss() -> Optional[int]:
    from lama_fast.benchmark import peak_rss_bytes

    return peak_rss_bytes()


def child(spec: Dict[str, Any]) -> Dict[str, Any]:
    """One case in this (fresh) process; returns its figures."""
    import torch

    import lama_fast

    torch.set_num_threads(spec["threads"])
    image, mask = inputs(spec["width"], spec["height"])
    rss_start = peak_rss()
    start = time.perf_counter()
    inpainter = lama_fast.load(spec["checkpoint"], backend=spec["backend"])
    load_s = time.perf_counter() - start
    rss_loaded = peak_rss()
    scale_ends: List[float] = []
    losses: List[Any] = []

    def progress(scale: int, scales: int, iteration: int, iterations: int, loss) -> None:
        if iteration + 1 == iterations or (scale == 0):
            if len(scale_ends) == scale:
                scale_ends.append(time.perf_counter())
                losses.append(None if loss is None else float(loss))

    busy_before, own_before = machine_cpu_s()["busy"], time.process_time()
    start = time.perf_counter()
    out = inpainter.refine(image, mask, n_iters=spec["n_iters"], min_side=spec["min_side"], progress=progress)
    wall = time.perf_counter() - start
    other_cpu = (machine_cpu_s()["busy"] - busy_before) - (time.process_time() - own_before)
    np.save(spec["output"], out)
    scales = []
    previous = start
    for end in scale_ends:
        scales.append(round(end - previous, 3))
        previous = end
    return {
        "load_s": round(load_s, 3),
        "refine_s": round(wall, 3),
        "scale_s": scales,
        "last_loss": losses,
        "peak_rss_bytes": peak_rss(),
        "rss_before_load_bytes": rss_start,
        "rss_after_load_bytes": rss_loaded,
        "other_cpu_s": round(other_cpu, 1),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def run_case(case: tuple, checkpoint: Path, folder: Path, n_iters: int, threads: int) -> Dict[str, Any]:
    backend, width, height, min_side, scales = case
    name = f"{backend}_{width}x{height}"
    spec = dict(backend=backend, width=width, height=height, min_side=min_side, n_iters=n_iters,
                threads=threads, checkpoint=str(checkpoint), output=str(folder / f"{name}.npy"))
    log(f"{name}: {scales} scales, {n_iters} iterations per scale")
    started = time.time()
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(case=name, backend=backend, size=f"{width}x{height}", scales=scales, min_side=min_side,
                  n_iters=n_iters, started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
                  output=spec["output"])
    log(f"{name}: {result['refine_s']} s, peak RSS {result['peak_rss_bytes'] / 2**30:.2f} GiB")
    return result


def compare(a: str, b: str) -> Dict[str, Any]:
    """How far apart two uint8 outputs are."""
    x, y = np.load(a).astype(np.int16), np.load(b).astype(np.int16)
    diff = np.abs(x - y)
    return {"max_level_diff": int(diff.max()), "equal_fraction": round(float((diff == 0).mean()), 5),
            "within_1_fraction": round(float((diff <= 1).mean()), 5), "mean_abs_diff": round(float(diff.mean()), 4)}


def machine() -> str:
    from lama_fast.backends.cpu import cpu_flags, cpu_name

    flags = cpu_flags()
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    return f"{cpu_name()}, {os.cpu_count()} cores, CPU flags {isa}; Python {platform.python_version()}"


def markdown(report: Dict[str, Any]) -> str:
    rows = report["cases"]
    lines = ["# Refinement: the original algorithm (eager autograd, reference model) against the cpu backend", "",
             f"Machine: {report['machine']}; torch {rows[0]['torch']}, {rows[0]['threads']} threads. "
             f"Run {report['started']} – {report['finished']}.",
             f"Model: {report['checkpoint']}. Settings: the released ones ({report['n_iters']} iterations per "
             "scale, lr 0.002, max 3 scales, px_budget 1,800,000), min_side chosen for the scales shown. "
             "Each case in a fresh process, one after another; peak RSS is the process's VmHWM (model, "
             "inputs and all).", "",
             "| case | scales | load s | refine s | per scale s | peak RSS GiB | other CPU s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['backend']} {r['size']} | {r['scales']} | {r['load_s']} | {r['refine_s']} | "
                     f"{' / '.join(str(s) for s in r['scale_s'])} | {r['peak_rss_bytes'] / 2**30:.2f} | "
                     f"{r['other_cpu_s']} |")
    lines.append("")
    for key, value in report.get("ratios", {}).items():
        lines.append(f"- {key}: {value}")
    for key, value in report.get("agreement", {}).items():
        lines.append(f"- output agreement {key}: {value}")
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a smoke run at 256x192 into a temporary folder")
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint (default: big-lama with random weights)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", choices=["reference", "cpu"], help="run only this backend's cases")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.only:
        cases = [c for c in cases if c[0] == args.only]
    n_iters = 3 if args.quick else 15
    with tempfile.TemporaryDirectory(prefix="refine-bench-") as tmp:
        folder = Path(tmp)
        checkpoint, checkpoint_name = checkpoint_to_use(args.checkpoint, folder)
        report: Dict[str, Any] = {"machine": machine(), "checkpoint": checkpoint_name, "n_iters": n_iters,
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S"), "cases": []}
        for case in cases:
            report["cases"].append(run_case(case, checkpoint, folder, n_iters, args.threads))
        report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        by_size: Dict[str, Dict[str, Dict[str, Any]]] = {}
        for r in report["cases"]:
            by_size.setdefault(r["size"], {})[r["backend"]] = r
        report["ratios"], report["agreement"] = {}, {}
        for size, pair in by_size.items():
            if "reference" in pair and "cpu" in pair:
                ref, cpu = pair["reference"], pair["cpu"]
                report["ratios"][f"{size} speed-up (reference s / cpu s)"] = round(ref["refine_s"] / cpu["refine_s"], 2)
                report["ratios"][f"{size} peak RSS (cpu / reference)"] = round(
                    cpu["peak_rss_bytes"] / ref["peak_rss_bytes"], 3)
                report["agreement"][size] = compare(ref["output"], cpu["output"])
        for r in report["cases"]:
            r.pop("output", None)
        text = markdown(report)
        print(text)
        if not args.quick:
            RESULTS.mkdir(parents=True, exist_ok=True)
            (RESULTS / "refine.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            (RESULTS / "refine.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
