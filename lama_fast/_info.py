"""What lama_fast finds on this machine: versions, CPU, compiled parts and backends, as data and as text."""

from __future__ import annotations

import platform
from typing import Any, Dict, List, Optional, Sequence

import torch

# The CPU flags that decide which kernels run.
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
# The optional packages whose versions are reported.
OPTIONAL_PACKAGES = ("PIL", "safetensors", "triton")


def info() -> Dict[str, Any]:
    """The whole picture as plain data.

    ``versions``: package -> version ("not installed" for a missing optional one); ``cpu``: the CPU's
    name; ``cpu_features``: which of CPU_FEATURES it has; ``threads``: ``intra_op`` and ``inter_op``;
    ``cuda``: ``available``, ``version`` (None for a CPU build of torch) and ``devices``; ``extension``,
    ``triton``: the reasons each is unusable (empty: usable); ``winograd``: ``isa`` (None when not used)
    and ``reasons``; ``cuda_kernels``: ``reasons`` and ``build`` (setup.py's decision); ``backends``:
    device -> dtype name -> ``available_backends(device, dtype)``.
    """
    import numpy

    from . import __version__
    from ._build import build_info, extension_reasons
    from .backends import available_backends
    from .backends.cpu import cpu_flags, cpu_name
    from .backends.cuda import cuda_kernels_reasons

    versions = {"lama_fast": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "numpy": numpy.__version__}
    for name in OPTIONAL_PACKAGES:
        try:
            versions[name] = getattr(__import__(name), "__version__", "installed")
        except ImportError:
            versions[name] = "not installed"
    flags = cpu_flags()
    cuda = torch.cuda.is_available()
    checks = [("cpu", torch.float32), ("cpu", torch.bfloat16)]
    if cuda:
        checks += [("cuda", torch.float32), ("cuda", torch.bfloat16)]
    backends: Dict[str, Dict[str, Dict[str, Optional[str]]]] = {}
    for device, dtype in checks:
        backends.setdefault(device, {})[_dtype_name(dtype)] = available_backends(device, dtype)
    return {
        "versions": versions,
        "cpu": cpu_name(),
        "cpu_features": [flag for flag in CPU_FEATURES if flag in flags],
        "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
        "cuda": {"available": cuda, "version": torch.version.cuda,
                 "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []},
        "extension": extension_reasons(),
        "winograd": _winograd(),
        "cuda_kernels": {"reasons": cuda_kernels_reasons(), "build": build_info()["cuda_extension"]},
        "triton": _triton_reasons(),
        "backends": backends,
    }


def format_info(data: Dict[str, Any]) -> str:
    """``info()``'s data as the two tables ``lama-fast info`` prints: components, then backends."""
    rows = [(name, version) for name, version in data["versions"].items()]
    rows.append(("cpu", data["cpu"]))
    rows.append(("cpu features", ", ".join(data["cpu_features"]) or "-"))
    threads = data["threads"]
    rows.append(("threads", f"{threads['intra_op']} intra-op, {threads['inter_op']} inter-op"))
    cuda = data["cuda"]
    if cuda["available"]:
        rows.append(("cuda", f"{cuda['version']}: {', '.join(cuda['devices'])}"))
    else:
        rows.append(("cuda", "no CUDA device" + ("" if cuda["version"] else " (CPU build of torch)")))
    rows.append(("extension lama_fast._C", "; ".join(data["extension"]) or "built"))
    if not data["extension"]:
        winograd = data["winograd"]
        rows.append(("winograd 3x3 kernels", f"{winograd['isa']} (used by the cpu backend in float32)"
                     if not winograd["reasons"] else f"not used: {'; '.join(winograd['reasons'])}"))
    kernels = data["cuda_kernels"]
    rows.append(("CUDA kernels", "built: spectral_transform and fourier_unit for CUDA tensors ("
                 + kernels["build"].removeprefix("built: ") + ")" if not kernels["reasons"]
                 else f"not available: {'; '.join(kernels['reasons'])}"))
    rows.append(("triton kernels", "; ".join(data["triton"]) or "importable"))
    backend_rows = [(name, device, dtype, reason or "available")
                    for device, by_dtype in data["backends"].items()
                    for dtype, table in by_dtype.items()
                    for name, reason in table.items()]
    return format_table(("component", "status"), rows) + "\n\n" + format_table(
        ("backend", "device", "dtype", "status"), backend_rows)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table with padded columns (no trailing newline)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    lines = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(lines + [line(row) for row in rows])


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _winograd() -> Dict[str, Any]:
    from .ops.winograd import winograd_isa, winograd_reasons

    reasons = winograd_reasons()
    return {"isa": None if reasons else winograd_isa(), "reasons": reasons}


def _triton_reasons() -> List[str]:
    try:
        from .kernels import triton_reasons
    except ImportError as error:
        return [f"unknown ({error})"]
    return triton_reasons()
