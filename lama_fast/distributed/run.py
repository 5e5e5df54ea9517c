"""A dataset run on Ray Data: the items whose output is missing -> ``map_batches`` over an actor pool of
:class:`~.worker.InpaintWorker` -> one result row per item, written to a results manifest.

Ray Data restarts an actor that dies and retries its item elsewhere; since every output is written
whole and an existing one is skipped, a retried item is never written twice, and a rerun after any
crash does only what is missing.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..batch import SaveOptions
from ..pairing import counted
from . import storage
from .items import Item
from .worker import RESULT_COLUMNS, InpaintWorker

# The results manifest's default name in the output folder: {start} is the run's start time, so that no
# run's record replaces another's.
RESULTS_NAME = "lama-fast-results-{start}.jsonl"
# Environment variables a cluster's workers are given from the driver's (object stores' settings).
_FORWARDED_ENV = ("AWS_", "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_")


@dataclass
class DatasetSummary:
    """The outcome of a dataset run; ``line()`` is the one-line report, ``results`` where the rows are."""

    done: int = 0
    skipped: int = 0
    failures: List[Dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    workers: int = 0
    results: Optional[str] = None

    @property
    def failed(self) -> int:
        return len(self.failures)

    def line(self) -> str:
        rate = self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (f"{self.done} done, {self.skipped} skipped (output exists), {self.failed} failed, "
                f"{counted(self.workers, 'worker')}, {self.elapsed_s:.1f} s, {rate:.2f} images/s")


def ray_reasons() -> List[str]:
    """Why a dataset run cannot start here (empty when it can): Ray Data and pyarrow must import."""
    reasons = []
    for module, package in (("ray.data", "ray[data]"), ("pyarrow", "pyarrow")):
        try:
            __import__(module)
        except ImportError as error:
            reasons.append(f"{module} does not import ({error}): pip install 'lama_fast[distributed]' "
                           f"(or {package})")
    return reasons


def inpaint_dataset(items: Sequence[Item], checkpoint: str, *, address: Optional[str] = "local",
                    workers: Optional[int] = None, threads: Optional[int] = None, overwrite: bool = False,
                    options: Optional[Dict[str, Any]] = None, save: SaveOptions = SaveOptions(),
                    device: str = "cpu", backend: str = "auto", dtype: str = "float32",
                    results: Optional[str] = None, progress: bool = True,
                    report: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> DatasetSummary:
    """Inpaint every item whose output is missing (all with ``overwrite``) on a Ray cluster.

    ``address``: "local" starts a Ray instance on this machine and stops it at the end; else the
    address of a running cluster ("auto", "ray://host:10001", "host:6379"). ``workers``: models in the
    actor pool (default one per node); ``threads``: torch threads (and Ray CPUs) per worker (default
    the cores of the smallest node divided by the workers on it). ``results``: where the result rows
    go (JSONL; default none). Failed items are in ``summary.failures`` and the rows; the others go on.
    """
    why = ray_reasons()
    if why:
        raise RuntimeError("; ".join(why))
    start = time.perf_counter()
    summary = DatasetSummary(results=results)
    _remove_leftovers(items, report)
    todo = list(items) if overwrite else [item for item in items if not storage.exists(item.output)]
    pending = set(todo)
    rows = [_row(item, "skipped") for item in items if item not in pending]
    if todo:
        rows += _run_on_ray(todo, checkpoint, address, workers, threads, overwrite, options, save, device, backend,
                            dtype, progress, summary, report)
        _remove_leftovers(items, report)  # those of workers that died while writing
    for row in rows:
        if row["status"] == "done":
            summary.done += 1
        elif row["status"] == "skipped":
            summary.skipped += 1
        else:
            summary.failures.append(row)
            report(f"failed: {row['name']}: {row['error']}")
    summary.elapsed_s = time.perf_counter() - start
    if results is not None:
        storage.write_whole(results, "".join(json.dumps(row) + "\n" for row in rows).encode())
    return summary


def _remove_leftovers(items: Sequence[Item], report: Callable[[str], None]) -> None:
    """Delete the temporary files that writers which died left beside local outputs."""
    from ..batch import Job, remove_leftovers

    local = [Job(Path(item.image), Path(item.mask), storage.local_path(item.output)) for item in items
             if storage.is_local(item.output)]
    removed = remove_leftovers(local)
    if removed:
        report(f"removed {counted(len(removed), 'temporary file')} left by writers that stopped")


def _row(item: Item, status: str, error: str = "") -> Dict[str, Any]:
    return {**asdict(item), "status": status, "seconds": 0.0, "error": error, "worker": ""}


def _run_on_ray(todo: List[Item], checkpoint: str, address: Optional[str], workers: Optional[int],
                threads: Optional[int], overwrite: bool, options: Optional[Dict[str, Any]], save: SaveOptions,
                device: str, backend: str, dtype: str, progress: bool, summary: DatasetSummary,
                report: Callable[[str], None]) -> List[Dict[str, Any]]:
    import ray

    local = address in (None, "local")
    owned = not ray.is_initialized()  # a caller's own connection is used as it is, and left open
    if owned:
        # "local" always starts an instance here (never RAY_ADDRESS's cluster); a cluster's workers get the
        # driver's object-store credentials and endpoint, which they would not see otherwise.
        env = {key: value for key, value in os.environ.items() if key.startswith(_FORWARDED_ENV)}
        ray.init(address="local" if local else address, include_dashboard=False if local else None,
                 log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": env} if env and not local else None)
    try:
        return _map_on_ray(ray, todo, checkpoint, local, address, workers, threads, overwrite, options, save,
                           device, backend, dtype, progress, summary, report)
    except BaseException as error:
        if owned:  # the failed call's frames would keep its datasets past the collection below
            traceback.clear_frames(error.__traceback__)
        raise
    finally:
        if owned:
            # Ray Data leaves some of its object refs in reference cycles. Collected after this instance
            # stops, they would be released against the next instance this process starts, where the same
            # ids name other objects (each instance numbers its driver's objects afresh): free them now.
            gc.collect()
            ray.shutdown()  # for a cluster: disconnects, the cluster goes on


def _map_on_ray(ray: Any, todo: List[Item], checkpoint: str, local: bool, address: Optional[str],
                workers: Optional[int], threads: Optional[int], overwrite: bool, options: Optional[Dict[str, Any]],
                save: SaveOptions, device: str, backend: str, dtype: str, progress: bool, summary: DatasetSummary,
                report: Callable[[str], None]) -> List[Dict[str, Any]]:
    """The rows of ``todo`` mapped over an actor pool on the connected Ray; its datasets end with the call."""
    workers, threads = _pool_size(ray, workers, threads, len(todo))
    summary.workers = workers
    report(f"inpainting {counted(len(todo), 'image')} with {counted(workers, 'worker')} of "
           f"{counted(threads, 'thread')} on {'a local Ray instance' if local else address}")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    dataset = ray.data.from_items([asdict(item) for item in todo], override_num_blocks=len(todo))
    done = dataset.map_batches(
        InpaintWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=threads,
        num_gpus=1 if str(device).startswith("cuda") else 0,  # a GPU model: one GPU each
        fn_constructor_kwargs=dict(checkpoint=checkpoint, device=device, backend=backend, dtype=dtype,
                                   options=options, jpeg_quality=save.jpeg_quality,
                                   png_compress_level=save.png_compress_level, threads=threads,
                                   overwrite=overwrite))
    return [{column: row[column] for column in RESULT_COLUMNS} for row in done.iter_rows()]


def _pool_size(ray: Any, workers: Optional[int], threads: Optional[int], items: int) -> "tuple[int, int]":
    """Workers and threads per worker: one model per node, all its cores, unless told otherwise."""
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    cpus = sorted(int(node.get("Resources", {}).get("CPU", 0)) for node in nodes) or [os.cpu_count() or 1]
    if workers is None:
        workers = len(cpus)
    workers = max(1, min(workers, items))
    if threads is None:
        per_node = -(-workers // len(cpus))
        threads = max(1, cpus[0] // per_node)
    if threads > max(cpus):
        raise ValueError(f"{threads} threads per worker, but the largest node has {max(cpus)} CPUs")
    return workers, threads
