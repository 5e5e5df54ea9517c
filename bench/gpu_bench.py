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

Modules: gpu_common.py (timing, flags, budget, rows, machine), gpu_suites.py (kernel, crossover, fft,
profile), gpu_e2e.py (end to end), gpu_report.py (the markdown).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch

from gpu_common import (E2E_LABELS, KERNEL_MAPS, SUITES, TRITON_ROUTES, Budget, describe, extension_report,
                        gpu_machine, log)
from gpu_e2e import e2e_suite
from gpu_report import markdown
from gpu_suites import crossover_suite, fft_check, kernel_suite, profile_suite

ROOT = Path(__file__).resolve().parents[1]


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



def parse_sizes(text: str) -> List[Tuple[int, int]]:
    """"512x512,1000x750" -> those end-to-end sizes' shapes (E2E_LABELS), in that order."""
    by_name = {label.split(" ")[0]: shape for shape, label in E2E_LABELS.items()}
    return [by_name[name] for name in parse_list(text, list(by_name), "end-to-end sizes")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="folder of gpu_<card>.md / .json")
    parser.add_argument("--suites", default="fft,kernel,e2e,profile,crossover",
                        help=f"comma separated, run in the order given, of {', '.join(SUITES)}")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip torch.compile of the reference module in the kernel suite")
    parser.add_argument("--compile-sizes", default="512x512",
                        help="end-to-end sizes (labels) at which to torch.compile the reference, comma separated, "
                             f"of {', '.join(l.split(' ')[0] for l in E2E_LABELS.values())}; 'none' for none")
    parser.add_argument("--kernel-maps", default=",".join(f"{h}x{w}" for h, w in KERNEL_MAPS),
                        help="maps (HxW) of the kernel suite, comma separated")
    parser.add_argument("--e2e-sizes", default=",".join(l.split(" ")[0] for l in E2E_LABELS.values()),
                        help="end-to-end sizes, comma separated, in the order they run, of "
                             f"{', '.join(l.split(' ')[0] for l in E2E_LABELS.values())}")
    parser.add_argument("--e2e-large-sizes", default="2048x2048",
                        help="the sizes of the e2e_large suite: the end-to-end suite again, where --suites puts it "
                             "(last, so that the budget leaves out the most expensive size first)")
    parser.add_argument("--e2e-variant-sizes", default="1000x750",
                        help="the sizes of the e2e_variants suite: the opt-in variants in bfloat16 alone (the fused "
                             "layout of both backends, the triton backend's dft-tc route and compiled stages)")
    parser.add_argument("--kernel-systems", choices=("all", "core"), default="all",
                        help="core: only the reference module (float32) and the ops in bfloat16, what the targets "
                             "compare")
    parser.add_argument("--e2e-systems", choices=("all", "core"), default="all",
                        help="core: only eager float32, the reference in a CUDA graph and both backends in CUDA "
                             "graphs (what the targets compare); the opt-in variants are then left to the "
                             "e2e_variants suite")
    parser.add_argument("--e2e-profile", default="none",
                        help="the end-to-end size (label) at which one bfloat16 forward of each backend is profiled "
                             "(eager launches: top kernels), right after that size's rows; 'none' for none")
    parser.add_argument("--triton-routes", default="fft,dft,dft-tc",
                        help="routes of the Triton op in the kernel suite (dft only at maps up to 64^2, dft-tc "
                             "(DFT matrices on tensor cores) up to 128^2)")
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
        size_names = [l.split(" ")[0] for l in E2E_LABELS.values()]
        args.compile_sizes = parse_list(args.compile_sizes, size_names, "compile sizes")
        args.e2e_shapes = parse_sizes(args.e2e_sizes)
        args.e2e_large_shapes = parse_sizes(args.e2e_large_sizes)
        args.e2e_variant_shapes = parse_sizes(args.e2e_variant_sizes)
        args.e2e_profile = parse_list(args.e2e_profile, size_names, "profile size")
        if len(args.e2e_profile) > 1:
            raise argparse.ArgumentTypeError("--e2e-profile takes one size")
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

    info = gpu_machine()
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

    parts = {"fft": lambda: fft_check(rows), "kernel": lambda: kernel_suite(args, rows, save, budget),
             "e2e": lambda: e2e_suite(args, rows, save, budget), "profile": lambda: profile_suite(args, rows, budget),
             "crossover": lambda: crossover.update(crossover_suite(args, rows, budget)),
             "e2e_variants": lambda: e2e_suite(args, rows, save, budget, args.e2e_variant_shapes, variants_only=True),
             "e2e_large": lambda: e2e_suite(args, rows, save, budget, args.e2e_large_shapes)}
    for suite in suites:  # in the order given
        run(suite, parts[suite])
    print(save())
    log(f"total {time.time() - started:.0f} s; wrote {out / f'gpu_{name}.md'} and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
