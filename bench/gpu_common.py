"""What the GPU benchmarks share: CUDA-event and CUDA-graph timing, TF32 switches, the time budget, rows and the
machine.  Inputs, uint8 agreement, the CPU side of the machine and the rows' keys come from the measuring core,
``lama_fast.benchmark.core``."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from lama_fast.benchmark.core import machine_description, new_row

KERNEL_MAPS = [(64, 64), (128, 128), (256, 256), (94, 125)]
CROSSOVER_SIDES = [8, 16, 24, 32, 48, 64]
# 1000x750 before 2048^2: when --budget-s runs out, the most expensive size is the one left out.
E2E_SHAPES = [(512, 512), (752, 1000), (1024, 1024), (2048, 2048)]
E2E_LABELS = {(512, 512): "512x512", (1024, 1024): "1024x1024", (2048, 2048): "2048x2048",
              (752, 1000): "1000x750 (752x1000 padded)"}
SUITES = ("fft", "kernel", "e2e", "profile", "crossover", "e2e_variants", "e2e_large")
TRITON_ROUTES = ("fft", "dft", "dft-tc")
# The largest map side at which the kernel suite times the DFT routes ("dft": 64, "dft-tc": 128).
DFT_ROUTE_MAX_SIDE = {"dft": 64, "dft-tc": 128}
DTYPES = ((torch.float32, "float32"), (torch.bfloat16, "bfloat16"))

# System names shared by the rows and the comparison tables.
CUDA_OP = "CUDA ext op"
CUDA_OP_TF32 = "CUDA ext op (TF32 matmul)"
REF_GRAPH = "reference (CUDA graph)"
TRITON_GRAPH, TRITON_EAGER = "triton backend (CUDA graph)", "triton backend (eager launches)"
CUDA_GRAPH, CUDA_EAGER = "cuda backend (CUDA graph)", "cuda backend (eager launches)"
CUDA_TF32_GRAPH = "cuda backend TF32 matmul (CUDA graph)"
# The GPU generators' opt-in variants, timed in bfloat16 as "<backend> backend, <variant> (CUDA graph)":
# GpuGenerator.set_layout(True, output_dtype=bfloat16), set_route("dft-tc") (the triton backend only) and
# set_compiled(True).
VARIANTS = ("fused layout", "dft-tc route", "compiled stages")

Rows = List[Dict[str, Any]]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Flags:
    """torch's TF32 switches for one system, restored afterwards."""

    def __init__(self, matmul_tf32: bool, cudnn_tf32: bool) -> None:
        self.want = (matmul_tf32, cudnn_tf32)

    def __enter__(self):
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.want

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


# PyTorch's defaults: TF32 off in matmuls, on in cuDNN convolutions.
DEFAULT_FLAGS = (False, True)
TF32_FLAGS = (True, True)
STRICT_FLAGS = (False, False)


def flags_field(flags) -> Dict[str, bool]:
    """The row's record of the TF32 switches it ran with."""
    return {"matmul_tf32": flags[0], "cudnn_tf32": flags[1]}


def gpu_row(suite: str, shape: str, system: str, dtype: str, **fields: Any) -> Dict[str, Any]:
    """A GPU row (the core's row keys): status "ok" unless ``fields`` says otherwise."""
    return new_row({"suite": suite, "shape": shape, "system": system, "dtype": dtype}, **fields)


def skip_row(suite: str, shape: str, system: str, dtype: str, status: str) -> Dict[str, Any]:
    return gpu_row(suite, shape, system, dtype, status=status)


def describe(error: BaseException, limit: int = 300) -> str:
    return f"{type(error).__name__}: {str(error)[:limit]}"


def failed(rows: Rows, suite: str, shape: str, system: str, dtype: str, error: BaseException, label: str) -> None:
    """Log that ``system`` raised and record it as a failed row."""
    log(f"  {label} {system} {dtype} failed: {describe(error)}")
    rows.append(skip_row(suite, shape, system, dtype, f"failed: {describe(error)}"))


class Budget:
    """Wall-clock seconds the benchmark may use (None: unlimited); parts started after it ran out are skipped."""

    def __init__(self, seconds: Optional[float]) -> None:
        self.seconds = seconds if seconds and seconds > 0 else None
        self.deadline = time.time() + self.seconds if self.seconds else None

    def left(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.time()

    def expired(self) -> bool:
        return self.left() <= 0

    def reason(self) -> str:
        return f"skipped: the time budget (--budget-s {self.seconds:.0f}) ran out"

    def skipped(self, rows: Rows, suite: str, shape: str, system: str, dtype: str) -> bool:
        """When the budget ran out: record the row as skipped and say True."""
        if not self.expired():
            return False
        rows.append(skip_row(suite, shape, system, dtype, self.reason()))
        return True


def attempt(rows: Rows, budget: Budget, save: Callable[[], Any], where: Tuple[str, str, str, str], flags,
            run: Callable[[], Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """``run()`` under ``flags`` and no_grad for the row ``where`` (suite, shape, system, dtype); None when the
    budget ran out or it raised (the row is then recorded as skipped or failed)."""
    if budget.skipped(rows, *where):
        return None
    with Flags(*flags), torch.no_grad():
        try:
            return run()
        except Exception as error:
            failed(rows, *where, error, where[1])
            save()
            return None


def time_gpu(fn: Callable[[], Any], warmup: int, repeats: int) -> Dict[str, float]:
    """Median / min / max milliseconds of ``fn`` over ``repeats`` calls, CUDA events around each."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "repeats": repeats}


def time_graph(fn: Callable[[], Any], repeats: int) -> Optional[Dict[str, float]]:
    """The same, with ``fn`` captured once in a CUDA graph and replayed (launch overhead removed)."""
    try:
        fn()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return time_gpu(graph.replay, 3, repeats)
    except Exception as error:  # capture is best effort; the eager timing stands
        log(f"  graph capture failed: {type(error).__name__}: {error}")
        return None


def scaled_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    return ((got - want).abs() / want.abs().clamp(min=1)).max().item()


def _reasons(what: str, reasons: Callable[[], List[str]]) -> Optional[str]:
    """``reasons()`` joined (None when empty), or what it raised."""
    try:
        return "; ".join(reasons()) or None
    except Exception as error:
        return f"{what}() raised {describe(error)}"


def extension_report(no_cuda_ext: bool = False) -> Dict[str, Any]:
    """What setup.py built (lama_fast/_build_info.json) and whether the CUDA kernels are registered.

    ``cuda_skip`` is None when the CUDA extension's rows run, else why they are skipped."""
    report: Dict[str, Any] = {}
    try:
        from lama_fast._build import build_info

        report["build_info"] = build_info()
    except Exception as error:
        report["build_info"] = {"error": describe(error)}

    def cuda_reasons() -> List[str]:
        from lama_fast.backends.cuda import cuda_kernels_reasons

        return cuda_kernels_reasons()

    def triton_reasons() -> List[str]:
        from lama_fast.kernels import triton_reasons

        return triton_reasons()

    status = _reasons("lama_fast.backends.cuda.cuda_kernels_reasons", cuda_reasons)
    report["cuda_kernels"] = "registered" if status is None else f"not available: {status}"
    if no_cuda_ext:
        report["cuda_skip"] = "skipped: --no-cuda-ext"
    elif status is not None:
        report["cuda_skip"] = f"skipped: the CUDA kernels are not available ({status})"
    else:
        report["cuda_skip"] = None
    triton_why = _reasons("lama_fast.kernels.triton_reasons", triton_reasons)
    report["triton_skip"] = None if triton_why is None else f"skipped: triton unavailable ({triton_why})"
    return report


def gpu_machine() -> Dict[str, Any]:
    """The core's machine description with the GPU's, triton's, CUDA's and cuDNN's particulars and the date."""
    try:
        import triton

        triton_version = triton.__version__
    except Exception as error:
        triton_version = f"not importable ({type(error).__name__})"
    props = torch.cuda.get_device_properties(0)
    return {**machine_description(), "gpu": torch.cuda.get_device_name(0), "sms": props.multi_processor_count,
            "gpu_memory_gib": round(props.total_memory / 2 ** 30, 1), "triton": triton_version,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def spectral_weights(dtype: torch.dtype = torch.float32, device: str = "cuda") -> Dict[str, torch.Tensor]:
    """The folded weights of the kernel suite's SpectralTransform (lama_fast.benchmark's block), on ``device``."""
    from lama_fast.benchmark import build_kernel_block, fold_spectral_transform

    folded = fold_spectral_transform(build_kernel_block("spectral_transform"))
    return {k: v.to(device=device, dtype=dtype) for k, v in folded.items()}
