"""Benchmark of dataset runs on Ray Data (``lama_fast.distributed``) against the single-process folder run.

One run writes ``bench/results/ray.json`` (every figure, every item) and ``bench/results/ray.md`` (the
tables, also printed):

1. big-lama with seeded random weights (``random_generator("big-lama", seed=0)``), written as a
   Lightning ``.ckpt`` by ``serve_bench.checkpoint_to_use`` and checked to load back exactly;
2. two input folders: N images at 512x512 and M at 1000x750, each ``NAME.png`` with ``NAME_mask.png``,
   made from ``lama_fast/assets/astronaut.jpg`` and its hand-drawn mask, each shifted by a few pixels
   and 2-4 % lighter or darker than the last so that no two are alike;
3. Ray alone: ``ray.init`` and ``ray.shutdown`` timed, and the pipeline ``inpaint_dataset`` builds
   (``from_items`` with one block per item, ``map_batches(batch_size=1)`` over an actor pool) run with a
   UDF that does nothing, with 1 and with 2 actors, and with 2 actors and 10 items per block: what Ray
   Data costs per item on its own;
4. per size, in turn, each into a fresh output folder, ``hd_strategy="original"``:
   - ``single``: ``run_batch(plan_folder(IN, OUT), inpainter=lama_fast.load(CKPT))`` in this process,
     torch on both cores (the model load is inside the timed run, as in ``lama-fast inpaint``);
   - ``ray 1x2``: ``inpaint_dataset(folder_items(IN, OUT), CKPT, address="local", workers=1, threads=2)``;
   - ``ray 2x1``: the same with ``workers=2, threads=1``.

Each item's end is its output file's modification time; its start is the end minus the item's own
seconds (the result row's ``seconds``: read, inpaint, encode, write inside the worker) for Ray, and the
model call's start for the single process (each model call is timed). From these:

- start-up: from the call to the first item's start (Ray: ``ray.init``, the dataset, the actors'
  start and model load; single: the model load and the first read);
- steady images/s: per worker, (items - 1) / (last end - first end), summed over the workers;
- Ray's gap per item: on one worker, the next item's start minus the last item's end (the hand-off
  between items that Ray adds; the start-up is not in it).

Every phase records the CPU time of this process and all its descendants (Ray's processes are started
by this process), of everything else on the machine, and the hypervisor's steal time (``/proc``), so a
run on a shared machine says how shared it was.

    .venv/bin/python bench/ray_bench.py                  # the full run (8 minutes on a nearly idle 2-core AMD EPYC)
    .venv/bin/python bench/ray_bench.py --quick          # a smoke run, results in a temporary folder
    .venv/bin/python bench/ray_bench.py --images-512 16 --images-1000 8 --trivial-items 500
    .venv/bin/python bench/ray_bench.py --ray-alone-only  # step 3 again, into the existing results
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from PIL import Image, ImageEnhance  # noqa: E402
from serve_bench import (ASSETS, RESULTS, cell, log, machine_cpu_s, percentile, process_cpu_s,  # noqa: E402
                         checkpoint_to_use, rounded, table)

SIZES: Dict[str, Tuple[int, int]] = {"512x512": (512, 512), "1000x750": (1000, 750)}
SYSTEMS: Dict[str, Tuple[Optional[int], Optional[int]]] = {"single": (None, None), "ray 1x2": (1, 2),
                                                           "ray 2x1": (2, 1)}
OPTIONS = {"hd_strategy": "original"}
SAMPLE_EVERY_S = 0.5


# --------------------------------------------------------------------------- inputs


def source_pair() -> Tuple[Image.Image, Image.Image]:
    with Image.open(ASSETS / "astronaut.jpg") as img:
        photo = img.convert("RGB")
    with Image.open(ASSETS / "astronaut_mask.png") as img:
        mask = img.convert("L")
    return photo, mask


def variant(photo: Image.Image, mask: Image.Image, size: Tuple[int, int], index: int
            ) -> Tuple[Image.Image, Image.Image]:
    """Image ``index`` of a size: a region of the photo shifted by up to 8 pixels, scaled to ``size``
    (bicubic; the mask by nearest neighbour), its brightness 0.96-1.04. 512x512 takes a 504x504 region,
    1000x750 the top 504x378 (as serve_bench's 1000x750 input takes the top 512x384)."""
    width, height = size
    region = (504, 504) if width == height else (504, 378)
    dx, dy = (3 * index) % 9, (5 * index) % 9
    box = (dx, dy, dx + region[0], dy + region[1])
    image = photo.crop(box).resize(size, Image.BICUBIC)
    image = ImageEnhance.Brightness(image).enhance(1.0 + 0.02 * ((index % 5) - 2))
    return image, mask.crop(box).resize(size, Image.NEAREST)


def write_inputs(folder: Path, size_name: str, count: int) -> Dict[str, Any]:
    """``count`` images and masks of one size in ``folder``; their sizes in bytes and hole fractions."""
    photo, mask = source_pair()
    folder.mkdir(parents=True, exist_ok=True)
    holes = []
    for index in range(count):
        image, hole = variant(photo, mask, SIZES[size_name], index)
        image.save(folder / f"img_{index:03d}.png")
        hole.save(folder / f"img_{index:03d}_mask.png")
        holes.append(float((np.asarray(hole) > 0).mean()))
    images = [p.stat().st_size for p in folder.glob("img_???.png")]
    masks = [p.stat().st_size for p in folder.glob("img_???_mask.png")]
    return {"count": count, "image_png_bytes_mean": round(float(np.mean(images))),
            "mask_png_bytes_mean": round(float(np.mean(masks))),
            "hole_fraction_mean": round(float(np.mean(holes)), 4)}


def io_seconds(folder: Path, repeats: int = 3) -> Dict[str, float]:
    """What one item costs besides the model, timed here on the first input: reading and decoding the
    image and mask PNGs, and encoding and writing a PNG of the image's size (the output's work)."""
    from lama_fast.batch import SaveOptions, read_pair, save_image

    image_path, mask_path = folder / "img_000.png", folder / "img_000_mask.png"
    reads, writes = [], []
    with tempfile.TemporaryDirectory(prefix="ray_bench_io_") as tmp:
        for _ in range(repeats):
            start = time.perf_counter()
            image, mask = read_pair(image_path, mask_path)
            image.load()
            mask.load()
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            save_image(image, Path(tmp) / "out.png", SaveOptions())
            writes.append(time.perf_counter() - start)
    return {"read_decode_s": round(float(np.median(reads)), 4), "encode_write_s": round(float(np.median(writes)), 4)}


# --------------------------------------------------------------------------- CPU of this process tree


def children_of() -> Dict[int, List[int]]:
    """Parent pid -> child pids of every process (/proc/PID/stat)."""
    tree: Dict[int, List[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(parent, []).append(int(entry.name))
    return tree


def tree_pids() -> List[int]:
    """This process and its live descendants."""
    tree, found, todo = children_of(), [], [os.getpid()]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(tree.get(pid, []))
    return found


def tree_cpu() -> Dict[int, float]:
    """CPU seconds of this process and each of its live descendants."""
    seen = {}
    for pid in tree_pids():
        cpu = process_cpu_s(pid)
        if cpu is not None:
            seen[pid] = cpu
    return seen


def process_nice(pid: int) -> Optional[int]:
    """A process's nice value (/proc/PID/stat, field 19)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[16])
    except (OSError, IndexError, ValueError):
        return None


class CpuWatch:
    """The CPU used during a phase by this process tree (sampled, so that processes that end within the
    phase, such as Ray's, still count up to their last sample), by everything else, and stolen."""

    def __init__(self) -> None:
        self.base = tree_cpu()
        self.last = dict(self.base)
        self.machine = machine_cpu_s()
        self.start = time.perf_counter()
        self.nice: Set[int] = set()  # the nice values of the descendants seen (Ray's workers, helpers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="cpu-watch", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            self.last.update(tree_cpu())
            self.nice.update(n for n in map(process_nice, tree_pids()[1:]) if n is not None)

    def share(self) -> Dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self.last.update(tree_cpu())
        wall = max(time.perf_counter() - self.start, 1e-9)
        machine = machine_cpu_s()
        ours = sum(cpu - self.base.get(pid, 0.0) for pid, cpu in self.last.items())
        busy = machine["busy"] - self.machine["busy"]
        steal = machine["steal"] - self.machine["steal"]
        return {"wall_s": round(wall, 2), "ours_s": round(ours, 2), "ours_cores": round(ours / wall, 2),
                "other_cores": round(max(busy - ours, 0.0) / wall, 2), "steal_cores": round(steal / wall, 2),
                "processes": len(self.last), "descendants_nice": sorted(self.nice),
                "load_avg_1m": round(os.getloadavg()[0], 2)}


# --------------------------------------------------------------------------- Ray alone


class Echo:
    """A Ray Data UDF that does nothing but say when it ran."""

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, List[Any]]:
        return {"name": list(batch["name"]), "at": [time.time()] * len(batch["name"])}


def steady_rate(times: Sequence[float]) -> Optional[float]:
    """Items per second over the middle 80 % of sorted completion times (start and end cut off)."""
    times = sorted(times)
    cut = len(times) // 10
    middle = times[cut:len(times) - cut]
    if len(middle) < 2 or middle[-1] <= middle[0]:
        return None
    return (len(middle) - 1) / (middle[-1] - middle[0])


# (actors, items per block) of the Ray-alone pipelines: inpaint_dataset's shape (one item per block) with
# one and two actors, and the same with ten items per block.
PIPELINES = ((1, 1), (2, 1), (2, 10))


def pipeline(ray: Any, rows: List[Dict[str, str]], actors: int, per_block: int) -> Dict[str, Any]:
    """The rows through ``from_items`` and ``map_batches(Echo, batch_size=1)`` over ``actors`` actors: the
    build time, the steady rate and the CPU per item of the driver and of Ray's other processes."""
    driver_cpu, watch = process_cpu_s(os.getpid()) or 0.0, CpuWatch()
    start = time.perf_counter()
    dataset = ray.data.from_items(rows, override_num_blocks=-(-len(rows) // per_block))
    built = time.perf_counter() - start
    mapped = dataset.map_batches(Echo, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=1)
    times = [row["at"] for row in mapped.iter_rows()]
    wall = time.perf_counter() - start
    driver_cpu = (process_cpu_s(os.getpid()) or 0.0) - driver_cpu
    tree = watch.share()["ours_s"]
    rate = steady_rate(times)
    log(f"Ray alone, {actors} actor(s), {per_block} item(s) per block: {len(rows)} items in {wall:.1f} s, "
        f"steady {cell(rounded(rate, 1))} items/s")
    return {"actors": actors, "items_per_block": per_block, "from_items_s": round(built, 3),
            "from_items_ms_per_item": round(1000 * built / len(rows), 3), "wall_s": round(wall, 2),
            "steady_items_per_s": rounded(rate, 1), "steady_ms_per_item": rounded(1000 / rate if rate else None, 2),
            "driver_cpu_ms_per_item": round(1000 * driver_cpu / len(rows), 2),
            "ray_cpu_ms_per_item": round(1000 * (tree - driver_cpu) / len(rows), 2)}


def ray_alone(items: int, temp_dir: Path) -> Dict[str, Any]:
    """``ray.init``/``ray.shutdown`` timed, and the dataset pipeline of ``inpaint_dataset`` with a UDF that
    does nothing (``PIPELINES``): Ray Data's own cost per item on this machine."""
    import ray

    from lama_fast.distributed import storage

    rows = [{"name": f"img_{i:06d}_mask.png", "image": f"/data/in/img_{i:06d}.png",
             "mask": f"/data/in/img_{i:06d}_mask.png", "output": str(temp_dir / f"out/img_{i:06d}_mask.png")}
            for i in range(items)]
    start = time.perf_counter()
    missing = [row for row in rows if not storage.exists(row["output"])]
    exists_s = (time.perf_counter() - start) / len(rows)
    watch = CpuWatch()
    result: Dict[str, Any] = {"items": items, "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
                              "exists_check_ms_per_item": round(1000 * exists_s, 4), "pools": []}
    start = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    result["init_s"] = round(time.perf_counter() - start, 2)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray.data.from_items(missing[:10], override_num_blocks=10)  # Ray Data's first use, untimed
        for actors, per_block in PIPELINES:
            result["pools"].append(pipeline(ray, missing, actors, per_block))
    finally:
        start = time.perf_counter()
        ray.shutdown()
        result["shutdown_s"] = round(time.perf_counter() - start, 2)
    result["cpu"] = watch.share()
    return result


# --------------------------------------------------------------------------- the systems


@dataclass
class Done:
    """One item as it ran: on which worker, when it started and ended (epoch s), its own seconds."""

    name: str
    worker: str
    start: float
    end: float
    seconds: float
    model_s: Optional[float] = None


class TimedInpainter:
    """An Inpainter whose calls are timed (epoch start and end per call)."""

    def __init__(self, inpainter: Callable[..., Any]) -> None:
        self.inpainter = inpainter
        self.calls: List[Tuple[float, float]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.time()
        result = self.inpainter(*args, **kwargs)
        self.calls.append((start, time.time()))
        return result


def mtime(path: str) -> float:
    return os.stat(path).st_mtime_ns / 1e9


def run_single(checkpoint: Path, input_dir: Path, output_dir: Path) -> Tuple[float, List[Done], Dict[str, Any]]:
    """The folder run in this process: load the model (torch on both cores), then ``run_batch``."""
    import torch

    import lama_fast
    from lama_fast.batch import run_batch
    from lama_fast.pairing import plan_folder

    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.time()
    start = time.perf_counter()
    timed = TimedInpainter(lama_fast.load(str(checkpoint)))
    load_s = time.perf_counter() - start
    plan = plan_folder(input_dir, output_dir)
    summary = run_batch(plan, inpainter=timed, options=dict(OPTIONS), progress=False, report=lambda line: None)
    wall = time.perf_counter() - start
    ends = sorted(mtime(str(job.output)) for job in plan.jobs if job.output.exists())
    done = []
    for index, ((call_start, call_end), end) in enumerate(zip(timed.calls, ends)):
        item_start = ends[index - 1] if index else call_start
        done.append(Done(f"item {index}", f"pid {os.getpid()}", item_start, end, end - item_start,
                         call_end - call_start))
    extra = {"t0": t0, "model_load_s": round(load_s, 2), "threads": torch.get_num_threads(),
             "backend": getattr(timed.inpainter, "backend", None), "done": summary.done,
             "failed": summary.failed, "first_model_start": timed.calls[0][0] if timed.calls else None}
    del timed
    gc.collect()
    return wall, done, extra


def run_ray(checkpoint: Path, input_dir: Path, output_dir: Path, workers: int, threads: int,
            results_path: Path) -> Tuple[float, List[Done], Dict[str, Any]]:
    """``inpaint_dataset`` on a local Ray instance it starts and stops."""
    from lama_fast.distributed import folder_items, inpaint_dataset

    lines: List[str] = []
    t0 = time.time()
    start = time.perf_counter()
    items, _ = folder_items(str(input_dir), str(output_dir))
    summary = inpaint_dataset(items, str(checkpoint), address="local", workers=workers, threads=threads,
                              options=dict(OPTIONS), results=str(results_path), progress=False, report=lines.append)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]
    done = []
    for row in rows:
        if row["status"] == "done":
            end = mtime(row["output"])
            done.append(Done(row["name"], row["worker"], end - row["seconds"], end, row["seconds"]))
    extra = {"t0": t0, "done": summary.done, "failed": summary.failed, "pool_workers": summary.workers,
             "summary": summary.line(), "report": lines[:10],
             "errors": sorted({f["error"] for f in summary.failures})[:5]}
    return wall, done, extra


# --------------------------------------------------------------------------- figures of one run


def by_worker(done: Sequence[Done]) -> Dict[str, List[Done]]:
    workers: Dict[str, List[Done]] = {}
    for item in sorted(done, key=lambda d: d.end):
        workers.setdefault(item.worker, []).append(item)
    return workers


def steady(done: Sequence[Done]) -> Dict[str, Optional[float]]:
    """Images/s after the start-up (per worker (items - 1) / (last end - first end), summed), the median
    interval between one worker's consecutive ends, and the median gap between one item's end and the
    next item's start on the same worker."""
    rate, intervals, gaps = 0.0, [], []
    for items in by_worker(done).values():
        if len(items) < 2 or items[-1].end <= items[0].end:
            continue
        rate += (len(items) - 1) / (items[-1].end - items[0].end)
        intervals += [b.end - a.end for a, b in zip(items, items[1:])]
        gaps += [b.start - a.end for a, b in zip(items, items[1:])]
    return {"steady_images_per_s": rounded(rate, 4) if intervals else None,
            "interval_median_s": rounded(percentile(intervals, 50)),
            "gap_median_s": rounded(percentile(gaps, 50), 4), "gap_max_s": rounded(max(gaps, default=None), 4)}


def figures(system: str, wall: float, done: Sequence[Done], extra: Mapping[str, Any]) -> Dict[str, Any]:
    t0 = extra["t0"]
    first_start = min((d.start for d in done), default=None)
    last_end = max((d.end for d in done), default=None)
    row: Dict[str, Any] = {
        "system": system, "images": len(done), "failed": extra.get("failed", 0), "wall_s": round(wall, 2),
        "images_per_s": rounded(len(done) / wall if wall > 0 else None, 4),
        "startup_s": rounded(first_start - t0 if first_start else None, 2),
        "drain_s": rounded(t0 + wall - last_end if last_end else None, 2),
        "workers": len(by_worker(done)),
        **steady(done),
        "in_worker_median_s": rounded(percentile([d.seconds for d in done[1:]] if system == "single"
                                                 else [d.seconds for d in done], 50)),
        "model_median_s": rounded(percentile([d.model_s for d in done if d.model_s is not None], 50)),
    }
    row["items"] = [{**asdict(d), "start": round(d.start - t0, 3), "end": round(d.end - t0, 3),
                     "seconds": round(d.seconds, 3), "model_s": rounded(d.model_s)} for d in done]
    row.update({k: v for k, v in extra.items() if k not in ("t0", "first_model_start")})
    return row


def compare(rows: List[Dict[str, Any]]) -> None:
    """Each row's images/s (end to end and steady) as a multiple of the single process's."""
    single = next((r for r in rows if r["system"] == "single"), None)
    for row in rows:
        for key, ratio in (("images_per_s", "vs_single"), ("steady_images_per_s", "steady_vs_single")):
            base = single.get(key) if single else None
            row[ratio] = rounded(row[key] / base, 3) if row.get(key) and base else None


# --------------------------------------------------------------------------- the run


@dataclass
class Plan:
    counts: Dict[str, int]
    trivial_items: int
    systems: Tuple[str, ...]
    worker_niceness: int = 0


def estimate_s(plan: Plan) -> float:
    """Seconds the plan needs on an idle 2-core machine: 3.1 s per 512x512 image and 9.5 s per 1000x750
    (bench/results/serve.md), 20 s of start-up per run, 30 s for Ray alone."""
    per_image = {"512x512": 3.1, "1000x750": 9.5}
    runs = sum(plan.counts[s] * per_image[s] + 20 for s in plan.counts) * len(plan.systems)
    return runs + 30 + plan.trivial_items * 0.03


def run(plan: Plan, checkpoint: Optional[Path], folder: Path, json_path: Path) -> Dict[str, Any]:
    import ray
    import torch

    from lama_fast.benchmark.core import machine_info

    results: Dict[str, Any] = {
        "benchmark": "lama-fast dataset runs on Ray Data", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {**machine_info(), "cores": str(os.cpu_count()), "ray": ray.__version__},
        "plan": {"images": plan.counts, "trivial_items": plan.trivial_items, "systems": list(plan.systems),
                 "options": OPTIONS, "output_format": "png", "ray_worker_niceness": plan.worker_niceness},
        "load_avg_at_start": list(os.getloadavg()), "inputs": {}, "io": {}, "runs": [],
    }

    def save() -> None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=1) + "\n")

    log(f"plan: about {estimate_s(plan) / 60:.0f} minutes on an idle 2-core machine")
    checkpoint, results["checkpoint"] = checkpoint_to_use(checkpoint, folder)
    for size, count in plan.counts.items():
        results["inputs"][size] = write_inputs(folder / f"in_{size}", size, count)
        results["io"][size] = io_seconds(folder / f"in_{size}")
    save()

    log(f"Ray alone: {plan.trivial_items} items through a UDF that does nothing")
    results["ray_alone"] = ray_alone(plan.trivial_items, folder)
    save()

    for size, count in plan.counts.items():
        rows: List[Dict[str, Any]] = []
        for system in plan.systems:
            log(f"{size}: {system}, {count} images")
            input_dir, output_dir = folder / f"in_{size}", folder / f"out_{size}_{system.replace(' ', '_')}"
            watch = CpuWatch()
            if system == "single":
                wall, done, extra = run_single(checkpoint, input_dir, output_dir)
            else:
                workers, threads = SYSTEMS[system]
                wall, done, extra = run_ray(checkpoint, input_dir, output_dir, workers, threads,
                                            folder / f"rows_{size}_{system.replace(' ', '_')}.jsonl")
            row = {"size": size, **figures(system, wall, done, extra), "cpu": watch.share()}
            rows.append(row)
            log(f"  {row['images']} done, {row['failed']} failed in {row['wall_s']} s; start-up {row['startup_s']} s, "
                f"steady {row['steady_images_per_s']} images/s, gap {row['gap_median_s']} s; "
                f"CPU ours/other {row['cpu']['ours_cores']}/{row['cpu']['other_cores']}")
            compare(rows)
            results["runs"] = [r for r in results["runs"] if r["size"] != size] + rows
            save()
    results["torch_threads"] = torch.get_num_threads()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    save()
    return results


# --------------------------------------------------------------------------- the report


def cpu_cell(cpu: Mapping[str, float]) -> str:
    return f"{cpu['ours_cores']:.2f} / {cpu['other_cores']:.2f} / {cpu['steal_cores']:.2f}"


def markdown(results: Mapping[str, Any]) -> str:
    m, alone = results["machine"], results.get("ray_alone", {})
    lines = [
        "# Dataset runs on Ray Data against the single-process folder run",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, CPU flags {m['cpu_flags']}; Python {m['python']}, "
        f"torch {m['torch']}, Ray {m['ray']}. Run {results['started']} – {results.get('finished', '?')}; "
        f"load average at the start {', '.join(f'{v:.2f}' for v in results['load_avg_at_start'])}.",
        f"Model: {results['checkpoint']}; `hd_strategy=\"original\"` (one pass over the whole image), PNG "
        "outputs. Inputs: " + ", ".join(
            f"{i['count']} × {s} (image PNG {i['image_png_bytes_mean'] / 1e3:.0f} kB, "
            f"mask {i['mask_png_bytes_mean'] / 1e3:.1f} kB, hole {100 * i['hole_fraction_mean']:.1f} %)"
            for s, i in results["inputs"].items()) + ".",
        "Systems: `single` = `run_batch(plan_folder(IN, OUT), inpainter=lama_fast.load(CKPT))` in one process, "
        "torch on both cores; `ray WxT` = `inpaint_dataset(folder_items(IN, OUT), CKPT, address=\"local\", "
        "workers=W, threads=T)`, which starts and stops a local Ray instance. Ray's worker processes ran at "
        f"nice {results['plan'].get('ray_worker_niceness', 15)} (`RAY_worker_niceness`; Ray's default is 15, "
        "which on a shared machine lets every other process go first), the single process at nice 0.",
        "",
        "## Per size and system",
        "",
    ]
    lines += table(
        ["size", "system", "workers used", "images", "failed", "wall s", "images/s", "× single", "start-up s",
         "steady images/s", "× single (steady)", "s per item per worker", "in-worker s", "Ray gap s", "model s",
         "after last s", "CPU ours / other / steal"],
        [[r["size"], r["system"], str(r["workers"]), str(r["images"]), str(r["failed"]), cell(r["wall_s"]),
          cell(r["images_per_s"], "{:.3f}"), cell(r.get("vs_single"), "{:.2f}"), cell(r["startup_s"]),
          cell(r["steady_images_per_s"], "{:.3f}"), cell(r.get("steady_vs_single"), "{:.2f}"),
          cell(r["interval_median_s"]), cell(r["in_worker_median_s"]),
          "–" if r["system"] == "single" else cell(r["gap_median_s"], "{:.4f}"),
          cell(r["model_median_s"]), cell(r["drain_s"]), cpu_cell(r["cpu"])] for r in results["runs"]])
    inputs = results["inputs"]
    lines += ["", "## Besides the model, per item (timed in the benchmark's process, one item, median of 3)", ""]
    lines += table(["size", "read + decode image and mask s", "encode + write output PNG s",
                    "bytes in (image + mask)", "bytes out (output PNG, ≈ the image's)"],
                   [[s, cell(io["read_decode_s"]), cell(io["encode_write_s"]),
                     str(inputs[s]["image_png_bytes_mean"] + inputs[s]["mask_png_bytes_mean"]),
                     str(inputs[s]["image_png_bytes_mean"])] for s, io in results["io"].items()])
    if alone:
        lines += ["", f"## Ray alone ({alone['items']} items, a UDF that does nothing; "
                      f"{alone.get('measured', '')})", ""]
        lines += table(["actors", "items per block", "ray.init s", "from_items s", "ms per item to build", "run s",
                        "steady items/s", "ms per item", "driver CPU ms per item",
                        "Ray's other processes CPU ms per item", "ray.shutdown s", "CPU ours / other / steal"],
                       [[str(p["actors"]), str(p.get("items_per_block", 1)), cell(alone["init_s"]),
                         cell(p["from_items_s"]),
                         cell(p["from_items_ms_per_item"]), cell(p["wall_s"]), cell(p["steady_items_per_s"]),
                         cell(p["steady_ms_per_item"]), cell(p["driver_cpu_ms_per_item"]),
                         cell(p["ray_cpu_ms_per_item"]), cell(alone.get("shutdown_s")), cpu_cell(alone["cpu"])]
                        for p in alone["pools"]])
        lines += ["", "`driver CPU`: this process's CPU per item over `from_items` and the run (the Dataset and "
                      "its streaming executor live in the driver); `Ray's other processes`: the CPU of the raylet, "
                      "the GCS, the actors and Ray's helpers per item (actor start-up included). `items per "
                      "block`: `inpaint_dataset` makes one block per item (1); 10 shows what larger blocks save "
                      "(the UDF is still called once per item). The driver's check for existing outputs "
                      f"(local disk, `storage.exists`): {alone['exists_check_ms_per_item']} ms per item."]
    lines += [
        "",
        "Columns: `wall` is the call from start to return (single: model load included; Ray: `ray.init`, the "
        "actors' start and model load, the run, `ray.shutdown`). `start-up` is from the call to the first "
        "item's start; `steady images/s` is, per worker, (items − 1) ÷ (last output's time − first output's "
        "time), summed over workers (start-up and the end left out); `× single` divides by the single "
        "process's figure of the same size and column. `s per item per worker` is the median time between "
        "one worker's consecutive outputs; `in-worker` the median item seconds inside the worker (Ray: the "
        "result row's `seconds`: read, inpaint, encode, write; single: the same interval, its first item "
        "left out); `Ray gap` the median time on one worker from an item's output to the next item's start "
        "(what Ray adds between items); `model` the median model call (single only: the Ray worker's model "
        "time is inside `in-worker`); `after last` from the last output to the return (Ray: shutdown and the "
        "results file). An item's time is its output file's modification time (the file system's clock "
        "granularity, a few ms).",
        "CPU columns: average cores used during the run by this benchmark's process and all its descendants "
        "(Ray's processes included) / by every other process on the machine / stolen by the hypervisor. A "
        "non-zero `other` or `steal` means a shared machine: those rows are slower and noisier than on an "
        "idle machine, and the systems of one size ran at different times, under different load.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the command line


FULL_COUNTS = (8, 6, 300)
QUICK_COUNTS = (4, 2, 40)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-512", type=int, help=f"512x512 images ({FULL_COUNTS[0]}; 0 leaves the size out)")
    parser.add_argument("--images-1000", type=int, help=f"1000x750 images ({FULL_COUNTS[1]}; 0 leaves it out)")
    parser.add_argument("--trivial-items", type=int, help=f"items of the Ray-alone pipeline ({FULL_COUNTS[2]})")
    parser.add_argument("--systems", default=",".join(SYSTEMS),
                        help=f"systems to run, in order ({','.join(SYSTEMS)})")
    parser.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of random big-lama weights")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_COUNTS[:2]} images, {QUICK_COUNTS[2]} Ray-alone items where "
                             "not given; results in a temporary folder unless --out is given")
    parser.add_argument("--out", type=Path, help="folder of ray.json and ray.md (default bench/results)")
    parser.add_argument("--ray-worker-niceness", type=int, default=0,
                        help="nice value of Ray's worker processes (RAY_worker_niceness; 0 here, Ray's own "
                             "default 15): 0 lets them compete with other load as the single process does")
    parser.add_argument("--ray-alone-only", action="store_true",
                        help="measure Ray alone again into the existing ray.json of --out (or bench/results), "
                             "keeping its image runs, and rewrite ray.md")
    args = parser.parse_args(argv)
    names = ("images_512", "images_1000", "trivial_items")
    for name, default in zip(names, QUICK_COUNTS if args.quick else FULL_COUNTS):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if min(args.images_512, args.images_1000) < 0 or args.trivial_items < 10:
        parser.error("image counts must be 0 or more, --trivial-items at least 10")
    if args.images_512 + args.images_1000 == 0:
        parser.error("no images to run")
    args.systems = tuple(s.strip() for s in args.systems.split(",") if s.strip())
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown or not args.systems:
        parser.error(f"--systems: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(SYSTEMS)}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    counts = {name: n for name, n in (("512x512", args.images_512), ("1000x750", args.images_1000)) if n}
    plan = Plan(counts, args.trivial_items, args.systems, args.ray_worker_niceness)
    out = args.out or (Path(tempfile.mkdtemp(prefix="ray_bench_quick_")) if args.quick else RESULTS)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop Ray and remove the temporary folder
    os.environ.pop("RAY_ADDRESS", None)  # "local" must start its own instance, not join another
    os.environ["RAY_worker_niceness"] = str(args.ray_worker_niceness)
    with tempfile.TemporaryDirectory(prefix="rb", dir="/tmp") as tmp:
        # Ray's session files (and the file through which ray.init finds a running cluster) under tmp:
        # a short path, as Ray's Unix sockets live there.
        os.environ["RAY_TMPDIR"] = tmp
        folder = Path(tmp) / "bench"
        folder.mkdir()
        if args.ray_alone_only:
            results = json.loads((out / "ray.json").read_text())
            results["ray_alone"] = ray_alone(plan.trivial_items, folder)
            (out / "ray.json").write_text(json.dumps(results, indent=1) + "\n")
        else:
            results = run(plan, args.checkpoint, folder, out / "ray.json")
    text = markdown(results)
    (out / "ray.md").write_text(text)
    print(text)
    log(f"wrote {out / 'ray.json'} and {out / 'ray.md'}")
    failed = sum(r["failed"] for r in results["runs"]) + sum(r["images"] != plan.counts[r["size"]]
                                                            for r in results["runs"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
