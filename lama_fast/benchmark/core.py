"""The measuring core of every benchmark: timing, resident memory, inputs, uint8 agreement, the machine, rows
and worker processes.

``lama-fast bench`` and the scripts under ``bench/`` (GPU, high resolution, memory table, crop planning,
hostile checkpoints) all measure with these.  The module imports only the standard library and torch at
the top, so a script may load it from its file without importing the ``lama_fast`` package (the machine's
description and ``append_json`` import it when called).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch

DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16", torch.float16: "float16"}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
PEER_DISTRIBUTIONS = ("openvino", "onnxruntime", "onnx", "onnxscript", "matplotlib")
ROW_KEYS = ("suite", "block", "shape", "size", "system", "dtype", "run_id")


class Unavailable(Exception):
    """A system that cannot run here; the message says why and becomes the row's status."""


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32, and so on."""
    return DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def dtype_from_name(name: str) -> torch.dtype:
    """The torch dtype called ``name`` ('float32', 'bfloat16', ...)."""
    for dtype, known in DTYPE_NAMES.items():
        if known == name:
            return dtype
    raise ValueError(f"unknown dtype {name!r}; known: {', '.join(DTYPE_NAMES.values())}")


# --------------------------------------------------------------------------- timing


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


# --------------------------------------------------------------------------- the machine


def machine_description() -> Dict[str, str]:
    """What the numbers were measured on: CPU model, threads, versions."""
    from lama_fast.backends.cpu import cpu_name

    info = {
        "cpu": cpu_name(),
        "threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> Dict[str, str]:
    """``machine_description()`` plus the CPU flags and peer versions that decide the numbers."""
    from lama_fast.backends.cpu import cpu_flags

    info = dict(machine_description())
    flags = cpu_flags()
    info["host"] = platform.node()
    info["cpu_flags"] = " ".join(f for f in CPU_FLAGS if f in flags) or "-"
    info["interop_threads"] = str(torch.get_num_interop_threads())
    info["mkldnn"] = str(torch.backends.mkldnn.is_available())
    info["lama_fast"] = _distribution_version("lama_fast")
    for name in PEER_DISTRIBUTIONS:
        info[name] = _distribution_version(name)
    return info


def write_results(path: Union[str, Path], rows: Sequence[Mapping[str, Any]]) -> Dict[str, str]:
    """Write ``{"machine": machine_description(), "rows": rows}`` as JSON (its folder made); returns the machine."""
    machine = machine_description()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(machine=machine, rows=list(rows)), indent=1) + "\n")
    return machine


# --------------------------------------------------------------------------- resident memory


def proc_status_bytes(key: str) -> Optional[int]:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM, VmSize, ...) in bytes; None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_rss_bytes() -> Optional[int]:
    """Resident memory of this process now (Linux), else None."""
    return proc_status_bytes("VmRSS")


def ru_maxrss_bytes() -> Optional[int]:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (recorded beside VmHWM)."""
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def peak_rss_bytes() -> Optional[int]:
    """Peak resident memory of this process since it started (or since ``reset_peak_rss``).

    Linux's VmHWM is the high-water mark of this process's own address space.
    ``ru_maxrss`` is the fallback only: after a fork/vfork + exec it starts at
    the parent's resident size, so a worker started by a large parent would
    report the parent's memory.
    """
    hwm = proc_status_bytes("VmHWM")
    return hwm if hwm is not None else ru_maxrss_bytes()


def reset_peak_rss() -> None:
    """Set VmHWM back to the current resident size (Linux: /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


# --------------------------------------------------------------------------- inputs and agreement


def e2e_input(size: int, seed: int = 0, width: Optional[int] = None) -> torch.Tensor:
    """A generator input (1, 4, size, width or size): a smooth random image with two rectangular holes, and the mask."""
    height, width = size, width or size
    gen = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, max(2, height // 16), max(2, width // 16), generator=gen),
                                            size=(height, width), mode="bilinear", align_corners=False)
    mask = torch.zeros(1, 1, height, width)
    mask[..., height // 8: height // 3, width // 5: width // 2] = 1
    mask[..., height // 2: 3 * height // 4, width // 2: 7 * width // 8] = 1
    return torch.cat((image * (1 - mask), mask), dim=1)


def to_uint8_image(out: torch.Tensor) -> torch.Tensor:
    """The image pipeline's last step: x 255, clip to [0, 255], truncate to uint8 (as inpaint.py does)."""
    return (out.double() * 255).clamp(0, 255).to(torch.uint8)


def uint8_agreement(out: torch.Tensor, reference: torch.Tensor) -> Dict[str, float]:
    """Largest level difference of the uint8 images and the fraction of pixels (all channels) within 1 and 2."""
    diff = (to_uint8_image(out).to(torch.int16) - to_uint8_image(reference).to(torch.int16)).abs()
    per_pixel = diff.amax(dim=1) if diff.dim() == 4 else diff
    return {
        "u8_max_diff": int(diff.max()),
        "u8_within1": float((per_pixel <= 1).double().mean()),
        "u8_within2": float((per_pixel <= 2).double().mean()),
    }


def flat_output(out: Any) -> torch.Tensor:
    """Any output (tensor, numpy array, tuple of them) as one flat float64 tensor."""
    if isinstance(out, (tuple, list)):
        return torch.cat([flat_output(o) for o in out if o is not None])
    if not isinstance(out, torch.Tensor):
        import numpy as np

        out = torch.from_numpy(np.asarray(out))
    return out.detach().to(torch.float64).reshape(-1)


# --------------------------------------------------------------------------- rows


def model_label(model: Union[str, Mapping[str, Any], None], checkpoint: Optional[str] = None) -> str:
    """'big-lama', the checkpoint's path, or 'config(ngf=8, n_blocks=1, ...)' for a config mapping."""
    if checkpoint:
        return str(checkpoint)
    if isinstance(model, Mapping):
        keys = ("ngf", "n_downsampling", "n_blocks")
        return "config(" + ", ".join(f"{k}={model[k]}" for k in keys if k in model) + ")"
    return str(model)


def new_row(spec: Mapping[str, Any], **fields: Any) -> Dict[str, Any]:
    """A row: what it measures (the spec's suite, block, shape, size, system, dtype, run_id), status "ok", ``fields``."""
    row = {key: spec.get(key) for key in ROW_KEYS}
    row["status"] = "ok"
    row.update(fields)
    return row


def timed_row(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """The skeleton of a row of ``lama-fast bench``: what it measures, every number still None."""
    row = new_row(spec, first_call_s=None, median_s=None, spread_s=None, runs_s=[], build_s=None, note="",
                  rss_before_bytes=None, peak_rss_bytes=None, ru_maxrss_bytes=None, max_abs_err=None,
                  max_abs_ref=None, output_std=None, isolated=bool(spec.get("isolated")),
                  repeats=spec.get("repeats"), warmup=spec.get("warmup"))
    if spec.get("suite") == "e2e":
        row.update(model=model_label(spec.get("model"), spec.get("checkpoint")), seed=spec.get("seed"),
                   device=spec.get("device", "cpu"), u8_max_diff=None, u8_within1=None, u8_within2=None)
        if str(spec.get("system", "")).startswith("backend:"):
            row["backend"] = spec["system"].split(":", 1)[1]
    return row


def time_into(row: Dict[str, Any], fn: Callable[[], Any], spec: Mapping[str, Any],
              device: torch.device = torch.device("cpu")) -> Any:
    """Time ``fn`` into ``row`` (first call, median, spread, memory) and return its last output.

    The memory figures are taken only when the spec says the row has a process of its own (``isolated``).
    """
    held: Dict[str, Any] = {}

    def call():
        held.clear()  # the previous output is not kept alive through the next call
        held["out"] = fn()

    row["rss_before_bytes"] = current_rss_bytes() if spec.get("isolated") else None
    with torch.inference_mode():
        timing = measure(call, repeats=int(spec["repeats"]), warmup=int(spec["warmup"]), device=device)
    if spec.get("isolated"):
        row["peak_rss_bytes"] = peak_rss_bytes()
        row["ru_maxrss_bytes"] = ru_maxrss_bytes()
    row.update(first_call_s=timing.first_call, median_s=timing.median, spread_s=timing.spread, runs_s=timing.runs)
    return held["out"]


def error_status(exc: BaseException) -> str:
    """``error: Type: first line of the message`` (no trailing colon when the message is empty)."""
    return f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")


def append_json(rows: Sequence[Mapping[str, Any]], path: Union[str, Path]) -> None:
    """Append rows to a JSON list file (created if missing), atomically."""
    from lama_fast._io import atomic_write_bytes

    path = Path(path)
    existing = json.loads(path.read_text()) if path.exists() and path.stat().st_size else []
    atomic_write_bytes(path, json.dumps(list(existing) + list(rows), indent=1).encode())


# --------------------------------------------------------------------------- worker processes


@dataclass
class Worker:
    """What one worker process left: its row (the last stdout line that is a JSON object; None when none is),
    its exit status (None: stopped at the time limit), its output and its wall time."""

    row: Optional[Dict[str, Any]]
    returncode: Optional[int]
    stdout: str
    stderr: str
    wall_s: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.row is not None

    def failure(self, timeout_s: Optional[float]) -> Optional[str]:
        """Why the worker left no row (None when it did): it ran past the limit, was killed, exited, or said nothing."""
        if self.timed_out:
            return f"the worker ran past {timeout_s:g} s and was stopped"
        if self.returncode != 0:
            return exit_reason(self.returncode)
        return None if self.row is not None else "the worker wrote no row"


def _json_row(text: str) -> Optional[Dict[str, Any]]:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                return row
    return None


def run_worker(command: Sequence[str], timeout_s: Optional[float] = None, env: Optional[Mapping[str, str]] = None,
               cwd: Optional[str] = None) -> Worker:
    """Run ``command`` (a fresh process, no stdin) and collect its row; past ``timeout_s`` it is killed."""
    start = time.perf_counter()
    try:
        done = subprocess.run(list(command), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", env=None if env is None else dict(env), cwd=cwd, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        out, err = (part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                    for part in (exc.stdout, exc.stderr))
        return Worker(None, None, out, err, time.perf_counter() - start)
    return Worker(_json_row(done.stdout), done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


def print_row(row: Mapping[str, Any]) -> None:
    """A worker's answer: the row as one JSON line on stdout (``run_worker`` reads the last one)."""
    print(json.dumps(row), flush=True)


def exit_reason(code: int) -> str:
    """Why a worker with exit status ``code`` stopped, in words."""
    if code < 0:
        import signal

        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        hint = " (out of memory?)" if -code == 9 else ""
        return f"the worker was killed by {name}{hint}"
    return f"the worker exited with status {code}"


def package_env() -> Dict[str, str]:
    """This environment with the folder that holds ``lama_fast`` first on PYTHONPATH, for worker processes."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
