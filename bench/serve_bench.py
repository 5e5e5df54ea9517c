"""Load benchmark of ``lama-fast serve``: throughput, latency, HTTP overhead and memory under concurrent clients.

One run does everything and writes ``bench/results/serve.json`` (every figure, every request) and
``bench/results/serve.md`` (the tables, also printed):

1. writes big-lama with seeded random weights (``random_generator("big-lama", seed=0)``) as a Lightning
   ``.ckpt`` (generator under ``generator.``, the released layout) in a temporary folder, and checks that
   the checkpoint loader reads back exactly those weights;
2. starts the real server as a subprocess (``python -m lama_fast.cli serve --checkpoint CKPT --host
   127.0.0.1 --port P --max-queue Q --api-key K``), waits for ``/healthz``, sends one warm-up request per
   size and reads the server's resident memory (``VmRSS`` of ``/proc/PID/status``);
3. per size, the direct baseline and one client, in turn: ``lama_fast.load(CKPT, backend=<the server's
   backend>, dtype=<the server's dtype>)`` called on the same image and mask in this process while the
   server is idle (one untimed call, then ``--direct-repeats`` timed calls), each timed call followed by
   one request (``--requests-sequential``) while this process is idle. The HTTP overhead: the median
   client latency minus the median direct time, the same pair by pair, and per request the client
   latency minus the server's own model and queue seconds;
4. per size, 4 then 16 clients (threads, an ``httpx.Client`` each) sending ``POST /v1/inpaint`` back to
   back until the case's request count is used up;
5. reads the server's memory again and stops it with SIGTERM.

Every request sends a PNG image and a PNG mask with ``hd_strategy=original`` (the whole image through
the network in one pass, no crop or resize) and ``format=png``; an answer counts as completed when it is
200 and its PNG decodes to the input's size. The server's first answer per size must equal the direct
Inpainter's output pixel for pixel.

Inputs: ``lama_fast/assets/astronaut.jpg`` at 512x512 with its hand-drawn mask (10.8 % of the area), and
its top 512x384 scaled to 1000x750 (bicubic; the mask scaled by nearest neighbour, 14.4 %).

Each phase records the CPU time of the server, of this process and of everything else on the machine
(``/proc/stat``, including the hypervisor's steal time), so a run on a shared machine says how shared it was.

    .venv/bin/python bench/serve_bench.py                 # the full run (14 minutes on an idle 2-core AMD EPYC)
    .venv/bin/python bench/serve_bench.py --quick         # a smoke run, results in a temporary folder
    .venv/bin/python bench/serve_bench.py --requests-512 80 --requests-1000 40 --requests-sequential 20
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
ASSETS = ROOT / "lama_fast" / "assets"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Client-side limit of one request: 16 queued 1000x750 requests on 2 slow cores take minutes.
REQUEST_TIMEOUT_S = 900.0
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------- inputs


@dataclass
class Case:
    """One image size: the image and mask as PIL images and as the PNG bytes sent to the server."""

    name: str
    image: Image.Image
    mask: Image.Image
    image_png: bytes = b""
    mask_png: bytes = b""

    def __post_init__(self) -> None:
        self.image_png = png_bytes(self.image)
        self.mask_png = png_bytes(self.mask)

    @property
    def size(self) -> Tuple[int, int]:
        return self.image.size

    @property
    def hole_fraction(self) -> float:
        return float((np.asarray(self.mask) > 0).mean())


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_cases() -> List[Case]:
    """The sample photo at 512x512 with its mask, and its top 512x384 scaled to 1000x750."""
    with Image.open(ASSETS / "astronaut.jpg") as img:
        photo = img.convert("RGB")
    with Image.open(ASSETS / "astronaut_mask.png") as img:
        mask = img.convert("L")
    top = (0, 0, 512, 384)
    wide = Case("1000x750", photo.crop(top).resize((1000, 750), Image.BICUBIC),
                mask.crop(top).resize((1000, 750), Image.NEAREST))
    return [Case("512x512", photo, mask), wide]


# --------------------------------------------------------------------------- the checkpoint


def write_checkpoint(folder: Path) -> Path:
    """big-lama with seeded random weights as a Lightning .ckpt; checked by reading it back."""
    import torch

    from lama_fast.checkpoint import load_generator
    from lama_fast.model.random import random_generator

    generator = random_generator("big-lama", seed=0)
    weights = {k: v.detach().clone() for k, v in generator.state_dict().items()}
    path = folder / "big-lama-random.ckpt"
    torch.save({"state_dict": {f"generator.{k}": v for k, v in weights.items()},
                "epoch": 0, "global_step": 0}, path)
    loaded = load_generator(path).state_dict()
    different = [k for k, v in weights.items() if k not in loaded or not torch.equal(loaded[k], v)]
    if different or len(loaded) != len(weights):
        raise RuntimeError(f"{path}: the loader read back different weights ({different[:5]})")
    return path


RANDOM_CHECKPOINT = ("big-lama with random weights (`random_generator('big-lama', seed=0)`, "
                     "a Lightning .ckpt read back exactly)")


def checkpoint_to_use(checkpoint: Optional[Path], folder: Path) -> Tuple[Path, str]:
    """The checkpoint given, or big-lama with random weights written into ``folder``; and how to name it."""
    if checkpoint is not None:
        return checkpoint, str(checkpoint)
    log("writing big-lama with random weights (seed 0)")
    return write_checkpoint(folder), RANDOM_CHECKPOINT


# --------------------------------------------------------------------------- processes and the machine


def read_status_kib(pid: int, key: str) -> Optional[int]:
    """A kB field of /proc/PID/status (VmRSS, VmHWM) in KiB; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def process_cpu_s(pid: int) -> Optional[float]:
    """User + system CPU seconds of a process, all its threads (/proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_cpu_s() -> Dict[str, float]:
    """Busy and steal CPU seconds of the whole machine since boot (/proc/stat, all cores)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return {"busy": (user + nice + system + irq + softirq) / CLOCK_TICKS, "steal": steal / CLOCK_TICKS}


@dataclass
class CpuMark:
    """A point in time with the CPU seconds used so far by the machine, the server and this process."""

    wall: float
    machine: Dict[str, float]
    server: float
    bench: float

    @classmethod
    def now(cls, server_pid: int) -> "CpuMark":
        return cls(time.perf_counter(), machine_cpu_s(), process_cpu_s(server_pid) or 0.0,
                   process_cpu_s(os.getpid()) or 0.0)


def cpu_share(start: CpuMark, end: CpuMark) -> Dict[str, float]:
    """Average cores used between two marks by the server, this process, everything else, and stolen."""
    wall = max(end.wall - start.wall, 1e-9)
    server = (end.server - start.server) / wall
    bench = (end.bench - start.bench) / wall
    busy = (end.machine["busy"] - start.machine["busy"]) / wall
    steal = (end.machine["steal"] - start.machine["steal"]) / wall
    return {"wall_s": round(wall, 2), "server_cores": round(server, 2), "bench_cores": round(bench, 2),
            "other_cores": round(max(busy - server - bench, 0.0), 2), "steal_cores": round(steal, 2),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``lama-fast serve`` in a subprocess on a loopback port, its stderr in a file."""

    def __init__(self, checkpoint: Path, max_queue: int, folder: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api_key = secrets.token_hex(16)
        self.headers = {"Authorization": f"Bearer {self.api_key}"}
        self.command = [sys.executable, "-m", "lama_fast.cli", "serve", "--checkpoint", str(checkpoint),
                        "--host", "127.0.0.1", "--port", str(self.port), "--max-queue", str(max_queue),
                        "--api-key", self.api_key]
        self.log_path = folder / "server.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
                                        env=env)
        self.pid = self.process.pid

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> float:
        """Seconds from the start until GET /healthz answered 200."""
        import httpx

        deadline = self.started + timeout_s
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return time.perf_counter() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server was not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def config(self) -> Dict[str, Any]:
        import httpx

        answer = httpx.get(f"{self.url}/v1/config", headers=self.headers, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def memory_mib(self) -> Dict[str, Optional[float]]:
        rss, hwm = read_status_kib(self.pid, "VmRSS"), read_status_kib(self.pid, "VmHWM")
        return {"rss_mib": round(rss / 1024, 1) if rss else None, "hwm_mib": round(hwm / 1024, 1) if hwm else None}

    def log_tail(self, lines: int = 30) -> str:
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> Dict[str, Any]:
        """SIGTERM, then wait; the exit status and the seconds it took to stop."""
        start = time.perf_counter()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return {"returncode": self.process.returncode, "stop_s": round(time.perf_counter() - start, 2)}


# --------------------------------------------------------------------------- requests


@dataclass
class Answer:
    """One request as the client saw it."""

    start: float
    end: float
    status: Optional[int]
    inpaint_s: Optional[float] = None
    queue_s: Optional[float] = None
    error: Optional[str] = None
    retry_after_s: Optional[float] = None
    pixels: Optional[np.ndarray] = field(default=None, repr=False)

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def completed(self) -> bool:
        return self.status == 200 and self.error is None

    def record(self, origin: float) -> Dict[str, Any]:
        return {"start_s": round(self.start - origin, 4), "latency_s": round(self.latency, 4),
                "status": self.status, "inpaint_s": self.inpaint_s, "queue_s": self.queue_s, "error": self.error}


def header_float(headers: Mapping[str, str], name: str) -> Optional[float]:
    try:
        return float(headers[name])
    except (KeyError, ValueError):
        return None


def post_inpaint(client: Any, server: Server, case: Case, keep_pixels: bool = False) -> Answer:
    """POST /v1/inpaint with the case's PNGs; checks the answer is a PNG of the input's size."""
    import httpx

    files = {"image": ("image.png", case.image_png, "image/png"), "mask": ("mask.png", case.mask_png, "image/png")}
    data = {"hd_strategy": "original", "format": "png"}
    start = time.perf_counter()
    try:
        response = client.post(f"{server.url}/v1/inpaint", files=files, data=data, headers=server.headers)
    except httpx.HTTPError as exc:
        return Answer(start, time.perf_counter(), None, error=f"{type(exc).__name__}: {exc}")
    end = time.perf_counter()
    answer = Answer(start, end, response.status_code, header_float(response.headers, "x-inpaint-seconds"),
                    header_float(response.headers, "x-queue-seconds"))
    if response.status_code != 200:
        answer.retry_after_s = header_float(response.headers, "retry-after")
        answer.error = f"HTTP {response.status_code}: {response.text[:200]}"
        return answer
    try:
        with Image.open(io.BytesIO(response.content)) as img:
            img.load()
            if img.format != "PNG" or img.size != case.size:
                answer.error = f"answer is {img.format} {img.size[0]}x{img.size[1]}, expected PNG {case.name}"
            elif keep_pixels:
                answer.pixels = np.asarray(img.convert("RGB"))
    except OSError as exc:
        answer.error = f"answer does not decode: {exc}"
    return answer


def run_clients(server: Server, case: Case, clients: int, requests: int, deadline_s: float) -> List[Answer]:
    """``clients`` threads, each with its own connection, sending requests back to back until ``requests``
    have been sent or ``deadline_s`` has passed (no new request starts after it)."""
    import httpx

    lock = threading.Lock()
    remaining = [requests]
    answers: List[Answer] = []
    barrier = threading.Barrier(clients)
    stop_at = time.perf_counter() + deadline_s

    def take() -> bool:
        with lock:
            if remaining[0] <= 0 or time.perf_counter() > stop_at:
                return False
            remaining[0] -= 1
            return True

    def client_loop() -> None:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            barrier.wait()
            while take():
                answer = post_inpaint(client, server, case)
                with lock:
                    answers.append(answer)
                if answer.status == 503:  # busy: wait as told (at most a second) before the next one
                    time.sleep(min(answer.retry_after_s or 1.0, 1.0))

    threads = [threading.Thread(target=client_loop, name=f"client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(answers, key=lambda a: a.start)


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The q-th percentile (0-100), linear between the closest ranks; None for no values."""
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=float), q))


def rounded(value: Optional[float], digits: int = 3) -> Optional[float]:
    return None if value is None else round(value, digits)


def spread(values: Sequence[float]) -> Dict[str, Optional[float]]:
    return {"median_s": rounded(percentile(values, 50)), "min_s": rounded(min(values) if values else None),
            "p95_s": rounded(percentile(values, 95)), "max_s": rounded(max(values) if values else None)}


def summarise(case: Case, clients: int, requested: int, answers: Sequence[Answer], cpu: Mapping[str, float],
              direct_median: Optional[float]) -> Dict[str, Any]:
    done = [a for a in answers if a.completed]
    latencies = [a.latency for a in done]
    wall = (max(a.end for a in answers) - min(a.start for a in answers)) if answers else 0.0
    throughput = len(done) / wall if wall > 0 else None
    inpaint = [a.inpaint_s for a in done if a.inpaint_s is not None]
    queue = [a.queue_s for a in done if a.queue_s is not None]
    outside = [a.latency - a.inpaint_s - a.queue_s for a in done if a.inpaint_s is not None and a.queue_s is not None]
    errors = [a.error for a in answers if not a.completed and a.status != 503]
    origin = min((a.start for a in answers), default=0.0)
    return {
        "size": case.name, "clients": clients, "requests": requested, "sent": len(answers),
        "completed": len(done), "busy_503": sum(a.status == 503 for a in answers), "errors": len(errors),
        "error_messages": sorted(set(e or "" for e in errors))[:5],
        "wall_s": round(wall, 2), "throughput_rps": rounded(throughput, 4),
        "throughput_vs_direct": rounded(throughput * direct_median, 3) if throughput and direct_median else None,
        "latency_p50_s": rounded(percentile(latencies, 50)), "latency_p95_s": rounded(percentile(latencies, 95)),
        "latency_p99_s": rounded(percentile(latencies, 99)), "latency_max_s": rounded(max(latencies, default=None)),
        "latency_min_s": rounded(min(latencies, default=None)),
        "server_inpaint_median_s": rounded(percentile(inpaint, 50)),
        "server_queue_median_s": rounded(percentile(queue, 50)),
        "outside_model_median_s": rounded(percentile(outside, 50), 4),
        "outside_model_max_s": rounded(max(outside, default=None), 4),
        "cpu": dict(cpu),
        "answers": [a.record(origin) for a in answers],
    }


# --------------------------------------------------------------------------- phases


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class CpuTally:
    """CPU use summed over several intervals (the direct calls, or the requests, of an interleaved pass)."""

    def __init__(self) -> None:
        self.wall = self.server = self.bench = self.busy = self.steal = 0.0

    def add(self, start: CpuMark, end: CpuMark) -> None:
        self.wall += end.wall - start.wall
        self.server += end.server - start.server
        self.bench += end.bench - start.bench
        self.busy += end.machine["busy"] - start.machine["busy"]
        self.steal += end.machine["steal"] - start.machine["steal"]

    def share(self) -> Dict[str, float]:
        wall = max(self.wall, 1e-9)
        return {"wall_s": round(self.wall, 2), "server_cores": round(self.server / wall, 2),
                "bench_cores": round(self.bench / wall, 2),
                "other_cores": round(max(self.busy - self.server - self.bench, 0.0) / wall, 2),
                "steal_cores": round(self.steal / wall, 2), "load_avg_1m": round(os.getloadavg()[0], 2)}


def direct_and_sequential(inpainter: Any, server: Server, case: Case, repeats: int, requests: int,
                          deadline_s: float) -> Tuple[Dict[str, Any], Dict[str, Any], np.ndarray]:
    """The direct baseline and the one-client pass, interleaved so that both see the same machine.

    One untimed direct call, then in turn a timed direct call (while the server is idle) and one request
    (while this process is idle), until ``repeats`` calls and ``requests`` requests are done."""
    import httpx

    start = time.perf_counter()
    first = inpainter(case.image, case.mask, hd_strategy="original")
    first_s = time.perf_counter() - start
    runs: List[float] = []
    answers: List[Answer] = []
    direct_cpu, request_cpu = CpuTally(), CpuTally()
    stop_at = time.perf_counter() + deadline_s
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for i in range(max(repeats, requests)):
            if time.perf_counter() > stop_at:
                break
            if i < repeats:
                mark = CpuMark.now(server.pid)
                start = time.perf_counter()
                inpainter(case.image, case.mask, hd_strategy="original")
                runs.append(time.perf_counter() - start)
                direct_cpu.add(mark, CpuMark.now(server.pid))
            if i < requests:
                mark = CpuMark.now(server.pid)
                answers.append(post_inpaint(client, server, case))
                request_cpu.add(mark, CpuMark.now(server.pid))
    direct = {"size": case.name, "first_call_s": round(first_s, 3), "repeats": len(runs), **spread(runs),
              "runs_s": [round(r, 3) for r in runs], "cpu": direct_cpu.share()}
    row = sequential_row(case, requests, answers, runs, request_cpu.share())
    return direct, row, np.asarray(first.convert("RGB"))


def sequential_row(case: Case, requests: int, answers: Sequence[Answer], runs: Sequence[float],
                   cpu: Mapping[str, float]) -> Dict[str, Any]:
    """The one-client figures: the overhead over the direct calls, as medians and pair by pair."""
    direct_median = percentile(runs, 50)
    row = summarise(case, 1, requests, answers, cpu, direct_median)
    done = [a for a in answers if a.completed]
    # One request at a time: the busy time is the sum of the latencies (direct calls ran in between).
    busy = sum(a.latency for a in done)
    row["wall_s"] = round(busy, 2)
    row["throughput_rps"] = rounded(len(done) / busy, 4) if busy else None
    row["throughput_vs_direct"] = (rounded(len(done) / busy * direct_median, 3)
                                   if busy and direct_median else None)
    p50 = row["latency_p50_s"]
    if p50 is not None and direct_median:
        row["overhead_s"] = round(p50 - direct_median, 3)
        row["overhead_pct"] = round(100 * (p50 - direct_median) / direct_median, 1)
    # Request i against the direct call just before it.
    pairs = [a.latency - r for a, r in zip(answers, runs) if a.completed]
    if pairs:
        row["paired_overhead_median_s"] = rounded(percentile(pairs, 50))
    outside, model = row["outside_model_median_s"], row["server_inpaint_median_s"]
    if outside is not None and model:
        row["outside_model_pct"] = round(100 * outside / model, 2)
    return row


@dataclass
class Plan:
    requests: Dict[str, int]
    sequential: int
    direct_repeats: int
    concurrency: Tuple[int, ...]
    max_queue: int
    case_deadline_s: float


def estimate_s(plan: Plan, first_s: Mapping[str, float]) -> float:
    """Model seconds the plan needs at the warm-up requests' pace (the server runs one at a time)."""
    total = 0.0
    for name, seconds in first_s.items():
        calls = plan.requests[name] * len(plan.concurrency) + plan.sequential + plan.direct_repeats + 1
        total += calls * seconds
    return total


def run(plan: Plan, checkpoint: Optional[Path], folder: Path, json_path: Path) -> Dict[str, Any]:
    import torch

    import lama_fast
    from lama_fast.benchmark.core import machine_info

    cases = make_cases()
    results: Dict[str, Any] = {
        "benchmark": "lama-fast serve load", "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {**machine_info(), "cores": str(os.cpu_count())},
        "plan": {"requests_per_concurrent_case": plan.requests, "sequential_requests": plan.sequential,
                 "direct_repeats": plan.direct_repeats, "concurrency": list(plan.concurrency),
                 "max_queue": plan.max_queue, "hd_strategy": "original", "format": "png",
                 "case_deadline_s": plan.case_deadline_s},
        "inputs": {c.name: {"hole_fraction": round(c.hole_fraction, 4), "image_png_bytes": len(c.image_png),
                            "mask_png_bytes": len(c.mask_png)} for c in cases},
        "direct": [], "sequential": [], "concurrent": [],
    }

    def save() -> None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=1) + "\n")

    checkpoint, results["checkpoint"] = checkpoint_to_use(checkpoint, folder)
    gc.collect()

    server = Server(checkpoint, plan.max_queue, folder)
    results["server_command"] = " ".join(a if a != server.api_key else "KEY" for a in server.command[1:])
    try:
        results["ready_s"] = round(server.wait_ready(), 2)
        config = server.config()
        results["server_config"] = config
        log(f"server ready in {results['ready_s']} s: backend {config.get('backend')}, dtype {config.get('dtype')}")

        import httpx

        warm: Dict[str, Answer] = {}
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            for case in cases:
                warm[case.name] = post_inpaint(client, server, case, keep_pixels=True)
                if not warm[case.name].completed:
                    raise RuntimeError(f"warm-up request {case.name} failed: {warm[case.name].error}")
                log(f"warm-up {case.name}: {warm[case.name].latency:.2f} s")
        results["warmup"] = {name: {"latency_s": round(a.latency, 3), "inpaint_s": a.inpaint_s}
                             for name, a in warm.items()}
        results["server_memory_start"] = server.memory_mib()
        estimate = estimate_s(plan, {n: a.inpaint_s or a.latency for n, a in warm.items()})
        results["estimated_s"] = round(estimate)
        log(f"plan: about {estimate / 60:.0f} minutes of model time")
        save()

        dtype = getattr(torch, str(config.get("dtype", "float32")))
        inpainter = lama_fast.load(checkpoint, backend=str(config.get("backend", "auto")), dtype=dtype)
        results["direct_backend"] = inpainter.backend
        results["direct_threads"] = torch.get_num_threads()
        results["identical_to_direct"] = {}
        for case in cases:
            row, seq, pixels = direct_and_sequential(inpainter, server, case, plan.direct_repeats,
                                                     plan.sequential, plan.case_deadline_s)
            results["direct"].append(row)
            results["sequential"].append(seq)
            results["identical_to_direct"][case.name] = bool(np.array_equal(pixels, warm[case.name].pixels))
            log(f"direct {case.name}: median {row['median_s']} s (min {row['min_s']}, max {row['max_s']})")
            log(f"1 client {case.name}: p50 {seq['latency_p50_s']} s, overhead {seq.get('overhead_s')} s")
            save()
        del inpainter
        gc.collect()

        for case in cases:
            direct_median = next(r["median_s"] for r in results["direct"] if r["size"] == case.name)
            for clients in plan.concurrency:
                log(f"{clients} clients {case.name}: {plan.requests[case.name]} requests")
                mark = CpuMark.now(server.pid)
                answers = run_clients(server, case, clients, plan.requests[case.name], plan.case_deadline_s)
                row = summarise(case, clients, plan.requests[case.name], answers,
                                cpu_share(mark, CpuMark.now(server.pid)), direct_median)
                row["server_memory_after"] = server.memory_mib()
                results["concurrent"].append(row)
                log(f"  {row['completed']}/{row['sent']} completed, {row['throughput_rps']} req/s, "
                    f"p50 {row['latency_p50_s']} s, p99 {row['latency_p99_s']} s, 503: {row['busy_503']}")
                save()
        results["server_memory_end"] = server.memory_mib()
    finally:
        results["server_stop"] = server.stop()
        results["server_log_tail"] = server.log_tail(15)
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        save()
    return results


# --------------------------------------------------------------------------- the report


def cell(value: Any, fmt: str = "{}") -> str:
    return "–" if value is None else fmt.format(value)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def cpu_cell(cpu: Mapping[str, float]) -> str:
    return f"{cpu['server_cores']:.2f} / {cpu['other_cores']:.2f} / {cpu['steal_cores']:.2f}"


def markdown(results: Mapping[str, Any]) -> str:
    m, config, plan = results["machine"], results.get("server_config", {}), results["plan"]
    lines = [
        "# `lama-fast serve` under load",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['threads']} torch threads), CPU flags {m['cpu_flags']}; "
        f"Python {m['python']}, torch {m['torch']}. Run {results['started']} – {results.get('finished', '?')}.",
        f"Server: backend `{config.get('backend')}`, device `{config.get('device')}`, dtype `{config.get('dtype')}`, "
        f"`--max-queue {plan['max_queue']}`; model: {results['checkpoint']}.",
        "Requests: `POST /v1/inpaint`, PNG image + PNG mask, `hd_strategy=original` (one pass over the whole "
        "image), `format=png`; closed loop (each client sends its next request when the last one is answered). "
        "Inputs: " + ", ".join(f"{n} (hole {100 * i['hole_fraction']:.1f} %)" for n, i in results["inputs"].items())
        + ".",
        "",
        "## Direct Inpainter calls (the baseline: in the benchmark's process, while the server is idle)",
        "",
    ]
    lines += table(
        ["size", "first call s", "median s", "min s", "p95 s", "max s", "runs", "identical to server's answer",
         "CPU server / other / steal"],
        [[r["size"], cell(r["first_call_s"]), cell(r["median_s"]), cell(r["min_s"]), cell(r["p95_s"]),
          cell(r["max_s"]), str(r["repeats"]), str(results.get("identical_to_direct", {}).get(r["size"], "–")),
          cpu_cell(r["cpu"])] for r in results["direct"]])
    lines += ["", "## One client, one request at a time (in turn with the direct calls): the HTTP overhead", ""]
    lines += table(
        ["size", "requests", "completed", "direct median s", "client p50 s", "overhead vs direct s", "%",
         "paired overhead s", "server model p50 s", "outside the model p50 s", "%", "client p95 s", "req/s",
         "× direct rate", "CPU server / other / steal"],
        [[r["size"], str(r["requests"]), str(r["completed"]),
          cell(next((d["median_s"] for d in results["direct"] if d["size"] == r["size"]), None)),
          cell(r["latency_p50_s"]), cell(r.get("overhead_s"), "{:+.3f}"), cell(r.get("overhead_pct"), "{:+.1f}"),
          cell(r.get("paired_overhead_median_s"), "{:+.3f}"), cell(r["server_inpaint_median_s"]),
          cell(r["outside_model_median_s"]), cell(r.get("outside_model_pct"), "{:.2f}"), cell(r["latency_p95_s"]),
          cell(r["throughput_rps"], "{:.3f}"), cell(r["throughput_vs_direct"], "{:.2f}"), cpu_cell(r["cpu"])]
         for r in results["sequential"]])
    lines += ["", "## Concurrent clients", ""]
    lines += table(
        ["size", "clients", "requests", "completed", "503", "errors", "wall s", "req/s", "× direct rate",
         "p50 s", "p95 s", "p99 s", "max s", "server model p50 s", "queue p50 s", "outside the model p50 s",
         "CPU server / other / steal"],
        [[r["size"], str(r["clients"]), str(r["requests"]), str(r["completed"]), str(r["busy_503"]),
          str(r["errors"]), cell(r["wall_s"]), cell(r["throughput_rps"], "{:.3f}"),
          cell(r["throughput_vs_direct"], "{:.2f}"), cell(r["latency_p50_s"]), cell(r["latency_p95_s"]),
          cell(r["latency_p99_s"]), cell(r["latency_max_s"]), cell(r["server_inpaint_median_s"]),
          cell(r["server_queue_median_s"]), cell(r["outside_model_median_s"]), cpu_cell(r["cpu"])]
         for r in results["concurrent"]])
    start, end = results.get("server_memory_start", {}), results.get("server_memory_end", {})
    lines += ["", "## Server memory", ""]
    growth = (end["rss_mib"] - start["rss_mib"]) if end.get("rss_mib") and start.get("rss_mib") else None
    lines += table(["RSS after warm-up MiB", "RSS at the end MiB", "growth MiB", "peak (VmHWM) MiB",
                    "stop on SIGTERM"],
                   [[cell(start.get("rss_mib")), cell(end.get("rss_mib")), cell(growth, "{:+.1f}"),
                     cell(end.get("hwm_mib")),
                     f"exit {results['server_stop']['returncode']} in {results['server_stop']['stop_s']} s"]])
    lines += [
        "",
        "Latencies are client-side (request sent to answer decoded), over completed requests; p99 of a few dozen "
        "requests is close to the maximum. `server model` is the server's `X-Inpaint-Seconds`, `queue` its "
        "`X-Queue-Seconds`. req/s is completed requests ÷ the case's wall time (one client: ÷ the sum of its "
        "latencies); `× direct rate` is that ÷ (1 / median direct call). The one-client requests and the "
        "direct calls alternate (direct call, request, direct call, ...), so both see the same load. "
        "Overhead figures: `overhead vs direct` = client p50 − direct median; `paired` = the median over "
        "requests of (latency − the direct call just before it); both are within the noise when smaller "
        "than the direct calls' spread. `outside the model` = the median over requests of client latency − "
        "`X-Inpaint-Seconds` − `X-Queue-Seconds`, taken on each request itself, so the model's run-to-run "
        "noise cancels: HTTP, multipart parsing, PNG decoding and encoding, the hand-off to the model's "
        "thread. `%` is of the direct median and of the server's model p50 respectively.",
        "CPU columns: average cores used during the phase by the server process / by every other process on "
        "the machine (this benchmark's own process excluded) / stolen by the hypervisor. A non-zero "
        "`other` or `steal` means a shared machine and noisier times.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the command line


# Request counts of the full run and of --quick: (512x512 per case, 1000x750 per case, one client, direct calls).
FULL_COUNTS = (40, 16, 8, 8)
QUICK_COUNTS = (4, 2, 1, 1)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-512", type=int, help=f"requests per 512x512 concurrent case ({FULL_COUNTS[0]})")
    parser.add_argument("--requests-1000", type=int,
                        help=f"requests per 1000x750 concurrent case ({FULL_COUNTS[1]})")
    parser.add_argument("--requests-sequential", type=int,
                        help=f"requests per size of the one-client pass ({FULL_COUNTS[2]})")
    parser.add_argument("--direct-repeats", type=int, help=f"timed direct Inpainter calls per size ({FULL_COUNTS[3]})")
    parser.add_argument("--concurrency", default="4,16", help="client counts of the concurrent cases (4,16)")
    parser.add_argument("--max-queue", type=int, default=32, help="the server's --max-queue (32)")
    parser.add_argument("--case-deadline-s", type=float, default=900.0,
                        help="no new request of a case starts after this many seconds (900)")
    parser.add_argument("--checkpoint", type=Path, help="use this checkpoint instead of random big-lama weights")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_COUNTS} requests and calls where not given; "
                             "results in a temporary folder unless --out is given")
    parser.add_argument("--out", type=Path, help="folder of serve.json and serve.md (default bench/results)")
    args = parser.parse_args(argv)
    names = ("requests_512", "requests_1000", "requests_sequential", "direct_repeats")
    for name, default in zip(names, QUICK_COUNTS if args.quick else FULL_COUNTS):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if min([getattr(args, name) for name in names] + [args.max_queue]) < 1:
        parser.error("request counts, repeats and --max-queue must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    concurrency = tuple(int(c) for c in args.concurrency.split(",") if c.strip())
    if not concurrency or min(concurrency) < 1:
        raise SystemExit("--concurrency: give client counts such as 4,16")
    plan = Plan({"512x512": args.requests_512, "1000x750": args.requests_1000}, args.requests_sequential,
                args.direct_repeats, concurrency, args.max_queue, args.case_deadline_s)
    out = args.out or (Path(tempfile.mkdtemp(prefix="serve_bench_quick_")) if args.quick else RESULTS)
    with tempfile.TemporaryDirectory(prefix="serve_bench_") as tmp:
        folder = Path(tmp)
        results = run(plan, args.checkpoint, folder, out / "serve.json")
    text = markdown(results)
    (out / "serve.md").write_text(text)
    print(text)
    log(f"wrote {out / 'serve.json'} and {out / 'serve.md'}")
    failed = sum(r["errors"] + r["busy_503"] for r in results["concurrent"] + results["sequential"])
    return 1 if failed or not all(results.get("identical_to_direct", {}).values()) else 0


if __name__ == "__main__":
    sys.exit(main())
