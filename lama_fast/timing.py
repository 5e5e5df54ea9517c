"""Wall-clock measurement shared by ``lama-fast bench`` and the benchmarks under ``bench/``."""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List

import torch


@dataclass
class Timing:
    """Seconds of a first call and of the repeated calls after warm-up."""

    first_call: float
    runs: List[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    @property
    def spread(self) -> float:
        """Max minus min of the timed runs."""
        return max(self.runs) - min(self.runs)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn: Callable[[], object], repeats: int = 3, warmup: int = 1,
            device: torch.device = torch.device("cpu")) -> Timing:
    """Time ``fn``: its first call, ``warmup`` untimed calls, then ``repeats`` timed calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    start = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - start
    for _ in range(max(0, warmup - 1)):
        fn()
    _sync(device)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        runs.append(time.perf_counter() - start)
    return Timing(first, runs)


def machine_description() -> Dict[str, str]:
    """What the numbers were measured on: CPU model, threads, versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info
