"""Crop planning under hostile masks: time and peak memory of ``hd.plan_crops`` and of the whole
``lama-fast inpaint IMAGE MASK --explain PLAN.png`` process (no checkpoint needed).

Each case runs in its own subprocess under ``/usr/bin/time -v`` (peak RSS is its "Maximum
resident set size"); the image and mask files of a command-line case are written by another
subprocess first, so that their making is not counted.  A ``plan`` row also gives the peak
memory of planning alone above what the process held before it (``plan_extra_mib``, from
VmHWM after resetting it through /proc/self/clear_refs), since the whole process also holds
the mask it made.  ``--stages`` measures the two stages of planning the same way and prints
them beside the memory guard's estimates (lama_fast.memory.estimate_grouping_bytes and
estimate_merging_bytes), which must not be below them.

``--before DIR`` imports ``lama_fast`` from DIR, so a copy of an older package
(``git archive HEAD lama_fast | tar -x -C DIR``) is measured instead of the working tree.  A
case past ``--timeout`` seconds, or past ``--cap-gib`` GiB of address space beyond what the
interpreter holds after its imports, is reported with how it failed.

    .venv/bin/python bench/crop_plan_bench.py                        # the four cases of the results
    .venv/bin/python bench/crop_plan_bench.py --before /tmp/before   # the same, an older copy
    .venv/bin/python bench/crop_plan_bench.py --cases all --json out.json
    .venv/bin/python bench/crop_plan_bench.py --stages --cases all   # memory of each stage vs estimate
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _load_core():
    """lama_fast.benchmark.core of this checkout, loaded from its file: with ``--before`` a child's ``lama_fast``
    must be the older copy, so this checkout's package stays unimported."""
    path = Path(__file__).resolve().parents[1] / "lama_fast" / "benchmark" / "core.py"
    spec = importlib.util.spec_from_file_location("lama_fast_measuring_core", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


core = _load_core()

# name -> (height, width, mask kind, margin, runs: "plan" and/or "cli")
CASES = {
    "dots64-9000x6000-m128": (6000, 9000, "dots64", 128, ("plan", "cli")),
    "dots2-300x200-m1": (200, 300, "dots2", 1, ("plan",)),
    "dots64-12000x9000-m1": (9000, 12000, "dots64", 1, ("plan", "cli")),
    "blob-9000x6000-m128": (6000, 9000, "blob", 128, ("plan", "cli")),
    # More shapes, for the new code: millions of regions, runs and rounds.
    "dots3-12000x9000-m1": (9000, 12000, "dots3", 1, ("plan",)),
    "dots4-9000x6000-m2": (6000, 9000, "dots4", 2, ("plan",)),
    "dots5-9000x6000-m0": (6000, 9000, "dots5", 0, ("plan",)),
    "noise-9000x6000-m0": (6000, 9000, "noise", 0, ("plan",)),
    "checker-6000x4000-m0": (4000, 6000, "checker", 0, ("plan",)),
    "spiral-6000x6000-m0": (6000, 6000, "spiral", 0, ("plan",)),
    "comb-6000x6000-m0": (6000, 6000, "comb", 0, ("plan",)),
    "cascade-6000x6000-m1": (6000, 6000, "cascade", 1, ("plan",)),
    "cascade+dots-6000x12000-m1": (6000, 12000, "cascade+dots", 1, ("plan",)),
}
DEFAULT_CASES = ["dots64-9000x6000-m128", "dots2-300x200-m1", "dots64-12000x9000-m1", "blob-9000x6000-m128"]


def cascade(height: int, width: int, margin: int = 1, bar: int = 5):
    """Bars of ``bar`` pixels, each placed where its grown box overlaps the bounding box of the bars
    before it but none of their own boxes (and its pixels are not near theirs): every bar joins
    the merged box one round after the previous one, a chain of rounds as long as the bars."""
    import numpy as np

    hole = np.zeros((height, width), bool)
    boxes = np.zeros((height, width), bool)  # the bars' grown boxes
    near = np.zeros((height, width), bool)  # pixels within 2 * margin of a bar

    def add(y0, y1, x0, x1):
        hole[y0:y1, x0:x1] = True
        boxes[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin] = True
        near[max(0, y0 - 2 * margin):y1 + 2 * margin, max(0, x0 - 2 * margin):x1 + 2 * margin] = True

    cy, cx = height // 2, width // 2
    # Two bars whose boxes overlap in an L: their bounding box has room inside for the next bars.
    add(cy, cy + 1, cx, cx + bar)
    add(cy + 2 * margin, cy + 2 * margin + bar, cx - 2 * margin, cx - 2 * margin + 1)
    top, bottom, left, right = cy - margin, cy + 2 * margin + bar + margin, cx - 3 * margin, cx + bar + margin
    side = 0
    while True:
        for turn in range(4):
            s = (side + turn) % 4
            if s in (0, 2):  # a vertical bar below or above, at some column of the box
                y0 = bottom if s == 0 else top - bar
                spots = [(y0, y0 + bar, x, x + 1) for x in range(left + margin, right - margin)]
            else:  # a horizontal bar right or left, at some row of the box
                x0 = right if s == 1 else left - bar
                spots = [(y, y + 1, x0, x0 + bar) for y in range(top + margin, bottom - margin)]
            for y0, y1, x0, x1 in (reversed(spots) if s in (1, 2) else spots):
                if y0 < margin or x0 < margin or y1 + margin > height or x1 + margin > width:
                    continue
                if boxes[y0 - margin:y1 + margin, x0 - margin:x1 + margin].any() or near[y0:y1, x0:x1].any():
                    continue
                add(y0, y1, x0, x1)
                top, bottom = min(top, y0 - margin), max(bottom, y1 + margin)
                left, right = min(left, x0 - margin), max(right, x1 + margin)
                side = (s + 1) % 4
                break
            else:
                continue
            break
        else:
            return hole


def make_mask(kind: str, height: int, width: int):
    """A boolean mask: dots every N pixels, one disc, 1 % random pixels, a checkerboard, a spiral
    path, a comb, a cascade of bars, or a cascade beside dots."""
    import numpy as np

    mask = np.zeros((height, width), bool)
    if kind.startswith("dots"):
        step = int(kind[4:])
        mask[step // 2::step, step // 2::step] = True
    elif kind == "blob":
        radius = min(height, width) // 6
        for y in range(max(0, height // 2 - radius), min(height, height // 2 + radius)):
            half = int((radius ** 2 - (y - height // 2) ** 2) ** 0.5)
            mask[y, max(0, width // 2 - half):width // 2 + half] = True
    elif kind == "noise":
        rng = np.random.default_rng(0)
        for y in range(0, height, 256):
            mask[y:y + 256] = rng.random((min(256, height - y), width)) < 0.01
    elif kind == "checker":
        mask[::2, ::2] = True
        mask[1::2, 1::2] = True
    elif kind == "spiral":
        # One path, 1 px wide, winding inwards 2 px from its previous turn: one region of many runs.
        ring = 0
        while True:
            t, l, b, r = 2 * ring, 2 * ring, height - 1 - 2 * ring, width - 1 - 2 * ring
            if t > b or l > r:
                break
            mask[t, max(0, l - 2):r + 1] = True
            mask[t:b + 1, r] = True
            mask[b, l:r + 1] = True
            mask[t + 2:b + 1, l] = True
            ring += 1
    elif kind == "comb":
        # A spine along the bottom and a tooth on every other column: one region, reached from the
        # spine only, whose labels the old propagation moved one row per round.
        mask[-1, :] = True
        mask[:, ::2] = True
    elif kind == "cascade":
        mask[:] = cascade(height, width)
    elif kind == "cascade+dots":
        half = width // 2
        mask[:, half + 8:] = cascade(height, width - half - 8)
        mask[::4, :half:4] = True
    else:
        raise ValueError(kind)
    return mask


def label_rounds() -> list:
    """Rounds each labelling needs on shapes that are hard for propagating labels: lama_fast.hd's
    _components (its calls of np.minimum.at, one a round, counted by a profile hook) against the
    loop the crop planner used before, copied here (minimum-label propagation, one pointer jump)."""
    import numpy as np

    from lama_fast import hd

    def before(count, a, b):
        labels, rounds = np.arange(count), 0
        while a.size:
            rounds += 1
            low = np.minimum(labels[a], labels[b])
            joined = labels.copy()
            np.minimum.at(joined, a, low)
            np.minimum.at(joined, b, low)
            joined = joined[joined]
            if np.array_equal(joined, labels):
                break
            labels = joined
        return labels, rounds

    def now(count, a, b):
        calls = [0]

        def count_hooks(frame, event, arg):
            if event == "c_call" and getattr(arg, "__self__", None) is np.minimum and arg.__name__ == "at":
                calls[0] += 1

        sys.setprofile(count_hooks)
        try:
            roots = hd._components(count, a, b)
        finally:
            sys.setprofile(None)
        return roots, calls[0]

    n = 200000
    order = np.random.default_rng(0).permutation(n)
    zigzag = np.concatenate([np.arange(0, n, 2), np.arange(1, n, 2)[::-1]])
    graphs = [("chain numbered at random, 200000 nodes", n, order[:-1], order[1:]),
              ("chain numbered outside-in, 200000 nodes", n, zigzag[:-1], zigzag[1:])]
    for kind, size in (("spiral", 1001), ("comb", 2001)):
        rows, starts, ends = hd._runs(make_mask(kind, size, size))
        a, b = hd._touching(rows, starts, ends, True)
        graphs.append((f"runs of a {kind} path, {size}x{size} pixels", rows.size, a, b))
    out = []
    for name, count, a, b in graphs:
        old, old_rounds = before(count, a, b)
        new, new_rounds = now(count, a, b)
        out.append({"graph": name, "nodes": int(count), "rounds_before": old_rounds, "rounds_now": new_rounds,
                    "components": int(np.unique(new).size), "same": bool(np.unique(old).size == np.unique(new).size)})
    return out


def _measured(fn):
    """``fn()``, its seconds and its peak memory above what the process held before it (VmHWM reset first)."""
    core.reset_peak_rss()
    before = core.proc_status_bytes("VmRSS")
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start, core.proc_status_bytes("VmHWM") - before


def _cap(cap_gib: float) -> None:
    if cap_gib > 0:
        limit = core.proc_status_bytes("VmSize") + int(cap_gib * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def child_write(kind: str, height: int, width: int, folder: str) -> None:
    """Write photo.png (a smooth gradient, quick to decode) and photo_mask.png."""
    import numpy as np
    from PIL import Image

    rgb = np.empty((height, width, 3), np.uint8)
    cols = np.arange(width)
    for y in range(height):
        rgb[y, :, 0] = cols * 255 // max(1, width - 1)
        rgb[y, :, 1] = y * 255 // max(1, height - 1)
        rgb[y, :, 2] = (cols + y) % 256
    Image.fromarray(rgb).save(os.path.join(folder, "photo.png"), compress_level=1)
    del rgb
    mask = make_mask(kind, height, width)
    Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(folder, "photo_mask.png"), compress_level=1)


def child_plan(kind: str, height: int, width: int, margin: int, cap_gib: float) -> None:
    """Time plan_crops alone (the mask is made before the clock starts)."""
    import torch

    from lama_fast import hd

    hole = torch.from_numpy(make_mask(kind, height, width))
    _cap(cap_gib)
    boxes, seconds, extra = _measured(lambda: hd.plan_crops(hole, margin))
    core.print_row({"seconds": seconds, "boxes": len(boxes), "extra": extra, "module": hd.__file__})


def child_stages(kind: str, height: int, width: int, margin: int) -> None:
    """Each stage of planning: its extra peak memory and time, beside the guard's estimate."""
    import torch

    from lama_fast import hd, memory

    hole = torch.from_numpy(make_mask(kind, height, width))
    counts = hd.grouping_size(hole, margin)
    regions, *grouping = _measured(lambda: hd.crop_regions(hole, margin))
    boxes, *merging = _measured(lambda: hd.as_boxes(hd.merge_crops(regions, height, width)))
    core.print_row({
        "regions": len(regions), "boxes": len(boxes), "counts": list(counts),
        "grouping_s": grouping[0], "grouping": grouping[1],
        "grouping_estimate": memory.estimate_grouping_bytes(*counts),
        "merging_s": merging[0], "merging": merging[1], "merging_estimate": memory.estimate_merging_bytes(len(regions)),
    })


def child_cli(folder: str, margin: int, cap_gib: float) -> None:
    """The whole --explain command, as ``lama-fast`` runs it."""
    from lama_fast import cli

    _cap(cap_gib)
    start = time.perf_counter()
    code = cli.main(["inpaint", os.path.join(folder, "photo.png"), os.path.join(folder, "photo_mask.png"),
                     "--explain", os.path.join(folder, "plan.png"), "--crop-margin", str(margin)])
    core.print_row({"seconds": time.perf_counter() - start, "code": code, "module": cli.__file__})


def _run(args, timeout):
    """Run under /usr/bin/time -v; (wall seconds, peak RSS bytes, child's JSON line or None, failure)."""
    done = core.run_worker(["/usr/bin/time", "-v", sys.executable, __file__] + args, timeout)
    if done.timed_out:
        return done.wall_s, None, None, f"killed after {timeout:.0f} s"
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    peak = int(match.group(1)) * 1024 if match else None
    failure = None
    if not done.ok:
        lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("\t")
                 and not line.startswith("Command exited with")]
        failure = lines[-1] if lines else f"exit {done.returncode}"
    return done.wall_s, peak, done.row, failure


def machine() -> dict:
    """CPU model, cores and library versions of this machine."""
    import numpy

    return {**core.machine_description(), "cores": os.cpu_count(), "numpy": numpy.__version__}


def _mib(size):
    return None if size is None else round(size / (1 << 20))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=DEFAULT_CASES, help=f"any of {', '.join(CASES)}, or all")
    parser.add_argument("--before", metavar="DIR", help="measure the lama_fast package in DIR instead")
    parser.add_argument("--stages", action="store_true", help="memory of each planning stage vs its estimate")
    parser.add_argument("--rounds", action="store_true", help="rounds of the labelling on hard shapes, then exit")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--cap-gib", type=float, default=8.0)
    parser.add_argument("--json", metavar="PATH", help="also write the rows to PATH")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.before:
            # The editable install's finder would load the working tree whatever sys.path says.
            sys.meta_path[:] = [f for f in sys.meta_path if getattr(f, "__name__", "") != "_EditableFinder"]
            sys.path.insert(0, args.before)
        what, rest = args.child[0], args.child[1:]
        if what == "write":
            child_write(rest[0], int(rest[1]), int(rest[2]), rest[3])
        elif what == "plan":
            child_plan(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), args.cap_gib)
        elif what == "stages":
            child_stages(rest[0], int(rest[1]), int(rest[2]), int(rest[3]))
        elif what == "cli":
            child_cli(rest[0], int(rest[1]), args.cap_gib)
        return 0
    if args.rounds:
        for row in label_rounds():
            print(json.dumps(row), flush=True)
        return 0
    names = list(CASES) if args.cases == ["all"] else args.cases
    before = ["--before", args.before] if args.before else []
    label = f"before ({args.before})" if args.before else "working tree"
    print(json.dumps({"machine": machine(), "code": label}), flush=True)
    rows = []
    for name in names:
        height, width, kind, margin, runs = CASES[name]
        for what in (("stages",) if args.stages else runs):
            with tempfile.TemporaryDirectory() as folder:
                if what == "cli":
                    subprocess.run([sys.executable, __file__, "--child", "write", kind, str(height), str(width),
                                    folder], check=True)
                    child = ["--child", "cli", folder, str(margin)]
                else:
                    child = ["--child", what, kind, str(height), str(width), str(margin)]
                wall, peak, result, failure = _run(child + ["--cap-gib", str(args.cap_gib)] + before, args.timeout)
            row = {"case": name, "run": what, "code": label, "wall_s": round(wall, 2), "peak_rss_mib": _mib(peak),
                   "failed": failure}
            if result is not None and what == "stages":
                row.update({k: (round(v, 2) if k.endswith("_s") else v) for k, v in result.items()
                            if k not in ("grouping", "grouping_estimate", "merging", "merging_estimate")})
                for stage in ("grouping", "merging"):
                    row[f"{stage}_mib"] = _mib(result[stage])
                    row[f"{stage}_estimate_mib"] = _mib(result[f"{stage}_estimate"])
            elif result is not None:
                row.update({"inner_s": round(result["seconds"], 2), "boxes": result.get("boxes"),
                            "plan_extra_mib": _mib(result.get("extra"))})
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
