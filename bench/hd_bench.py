"""The high-resolution strategies on a 3000x2000 photo with a hole of 2 % of its area.

Each strategy runs in its own subprocess (big-lama with seeded random weights, the
chosen backend and dtype) through ``Inpainter.__call__``: the first call, then the
median and spread of ``--repeats`` more, and the process's peak RSS (VmHWM).
Writes bench/results/hd.json and hd.md.

    .venv/bin/python bench/hd_bench.py                      # cpu backend, float32, 3 repeats
    .venv/bin/python bench/hd_bench.py --backend reference --repeats 1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lama_fast.benchmark.core import measure, peak_rss_bytes, print_row, proc_status_bytes, run_worker, write_results

RESULTS = Path(__file__).resolve().parent / "results"
HEIGHT, WIDTH = 2000, 3000


def photo():
    """The sample photo scaled to 3000x2000, and two holes (a disc and a rectangle), 2.0 % of the area."""
    import numpy as np
    from PIL import Image

    sample = Path(__file__).resolve().parents[1] / "lama_fast" / "assets" / "astronaut.jpg"
    with Image.open(sample) as img:
        image = np.asarray(img.convert("RGB").resize((WIDTH, HEIGHT), Image.BICUBIC))
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[(yy - 600) ** 2 + (xx - 800) ** 2 < 170 ** 2] = 255
    mask[1400:1550, 2100:2300] = 255
    return image, mask


def child(strategy: str, backend: str, dtype_name: str, repeats: int) -> dict:
    import numpy as np
    import torch

    from lama_fast import Inpainter, optimize
    from lama_fast.model.random import random_generator

    image, mask = photo()
    dtype = getattr(torch, dtype_name)
    module = optimize(random_generator("big-lama", seed=0), backend=backend, dtype=dtype)
    inpainter = Inpainter(module, backend)
    plan = inpainter.plan((HEIGHT, WIDTH), torch.from_numpy(mask > 0), strategy)
    before = proc_status_bytes("VmRSS")
    first = []

    def call():
        out = inpainter(image, mask, hd_strategy=strategy)
        if not first:
            first.append(out)

    timing = measure(call, repeats=repeats)
    result = first[0]
    hole = mask > 0
    return dict(
        strategy=strategy, ran=plan.strategy, backend=backend, dtype=dtype_name, size=f"{WIDTH}x{HEIGHT}",
        hole_fraction=round(float(hole.mean()), 4), regions=plan.describe(),
        network_pixels=sum(b.height * b.width for b in plan.boxes) if plan.run_size is None
        else plan.run_size[0] * plan.run_size[1],
        first_call_s=round(timing.first_call, 3), median_s=round(timing.median, 3),
        spread_s=round(timing.spread, 3), runs_s=[round(r, 3) for r in timing.runs],
        peak_rss_mib=round(peak_rss_bytes() / 2 ** 20), rss_before_mib=round(before / 2 ** 20),
        estimated_peak_mib=round((plan.peak_bytes or 0) / 2 ** 20),
        outside_hole_identical=bool(np.array_equal(result[~hole], image[~hole])),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--strategies", default="original,crop,resize")
    args = parser.parse_args()
    rows = []
    for strategy in args.strategies.split(","):
        print(f"{strategy} ...", file=sys.stderr, flush=True)
        done = run_worker([sys.executable, __file__, "--child", strategy, args.backend, args.dtype, str(args.repeats)])
        if not done.ok:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(done.row)
        print(f"  {rows[-1]['median_s']} s, peak RSS {rows[-1]['peak_rss_mib']} MiB", file=sys.stderr)
    machine = write_results(RESULTS / "hd.json", rows)
    base = next((r for r in rows if r["strategy"] == "original"), None)
    lines = [
        f"# High-resolution strategies at {WIDTH}x{HEIGHT}, hole {rows[0]['hole_fraction'] * 100:.1f} % of the area",
        "",
        f"Machine: {machine['cpu']}, {machine.get('threads', '?')} threads, torch {machine.get('torch', '?')}; "
        f"big-lama, random weights, backend {args.backend}, {args.dtype}; `Inpainter.__call__` end to end "
        f"(median of {args.repeats} after a first call), each strategy in its own process. Made by `bench/hd_bench.py`.",
        "",
        "| strategy | what the network sees | pixels through the network | first call s | median s | spread s | "
        "vs original | peak RSS MiB | of which before the call | guard's estimate of the rest | outside hole identical |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = f"{base['median_s'] / r['median_s']:.1f}x faster" if base and r is not base else "-"
        lines.append(f"| {r['strategy']} | {r['regions']} | {r['network_pixels']:,} | {r['first_call_s']:.2f} | "
                     f"{r['median_s']:.2f} | {r['spread_s']:.2f} | {ratio} | {r['peak_rss_mib']} | {r['rss_before_mib']} | "
                     f"{r['estimated_peak_mib']} | {'yes' if r['outside_hole_identical'] else 'NO'} |")
    (RESULTS / "hd.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print_row(child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
        sys.exit(0)
    sys.exit(main())
