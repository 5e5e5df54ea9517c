"""The end-to-end suite: the reference generator, its cached float64 and float32 outputs, and the e2e jobs."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

from .core import (Unavailable, dtype_from_name, e2e_input, flat_output, peak_rss_bytes, time_into, timed_row,
                   uint8_agreement)
from .systems import build_e2e_system

# PyTorch's float64 convolution unfolds its whole input (im2col): for the 7x7 output
# convolution at 1024x1024 that is 26 GB, at 2048x2048 105 GB.  Above this size the
# float64 reference output comes from lama_fast's float64 rewrite of the same
# generator, which runs the large layers in stripes and which the test suite checks
# against the reference model to 1e-12 (tests/test_fast.py, striped layers included).
FLOAT64_REFERENCE_MAX_SIZE = 512


def load_reference_generator(model: Union[str, Mapping[str, Any]] = "big-lama", checkpoint: Optional[str] = None,
                             seed: int = 0) -> nn.Module:
    """The float32 reference generator: a checkpoint's weights, or seeded random ones in ``model``'s layout."""
    if checkpoint:
        from ..checkpoint import load_generator

        generator = load_generator(checkpoint)
    else:
        from ..model.random import random_generator

        generator = random_generator(model, seed=seed)
    generator = generator.float().eval()
    for parameter in generator.parameters():
        parameter.requires_grad_(False)
    return generator


def _checkpoint_identity(checkpoint: Optional[str]) -> Optional[List[Any]]:
    if not checkpoint:
        return None
    path = Path(checkpoint).resolve()
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def reference_cache_paths(cache_dir: Union[str, Path], model: Union[str, Mapping[str, Any]],
                          checkpoint: Optional[str], seed: int, size: int) -> Dict[str, Path]:
    """Where the float64 reference output and the float32 eager output for one size are cached."""
    key = json.dumps({"model": model, "checkpoint": _checkpoint_identity(checkpoint), "seed": seed, "size": size,
                      "torch": torch.__version__, "input": "e2e_input-v1"}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    name = "checkpoint" if checkpoint else (model if isinstance(model, str) else "config")
    base = Path(cache_dir) / f"{name}-{size}-{digest}"
    return {"float64": base.with_name(base.name + "-float64.pt"),
            "float32": base.with_name(base.name + "-eager-float32.pt")}


def _spec_cache_paths(spec: Mapping[str, Any]) -> Dict[str, Path]:
    return reference_cache_paths(spec["cache_dir"], spec["model"], spec.get("checkpoint"), int(spec["seed"]),
                                 int(spec["size"]))


def _save_atomic(tensor: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(tensor.contiguous().clone(), tmp)
    os.replace(tmp, path)


def _load_cached(path: Path) -> Optional[torch.Tensor]:
    if not path.is_file():
        return None
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # a truncated or foreign file: recompute it
        return None


def _float64_in_stripes(generator: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from ..fast import build_fast_generator, layers

    fast = build_fast_generator(generator, torch.float64)
    fast.keep_buffers = False
    saved = layers.STRIPE_ABOVE_BYTES, layers.STRIPE_BYTES
    layers.STRIPE_ABOVE_BYTES, layers.STRIPE_BYTES = 16 << 20, 4 << 20
    try:
        return fast(x.double())
    finally:
        layers.STRIPE_ABOVE_BYTES, layers.STRIPE_BYTES = saved


def run_reference_job(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """Compute the missing cached outputs of one size: float64 reference, float32 eager if asked."""
    size = int(spec["size"])
    paths = _spec_cache_paths(spec)
    wanted = ["float64"] + (["float32"] if spec.get("need_float32") else [])
    computed = []
    x = e2e_input(size, int(spec["seed"]))
    for kind in wanted:
        if _load_cached(paths[kind]) is not None:
            continue
        generator = load_reference_generator(spec["model"], spec.get("checkpoint"), int(spec["seed"]))
        dtype = torch.float64 if kind == "float64" else torch.float32
        with torch.inference_mode():
            if kind == "float64" and size > FLOAT64_REFERENCE_MAX_SIZE:
                out = _float64_in_stripes(generator, x)
            else:
                out = generator.to(dtype)(x.to(dtype))
        _save_atomic(out, paths[kind])
        computed.append(kind)
        del generator, out
    return {"status": "ok", "computed": computed, "peak_rss_bytes": peak_rss_bytes()}


def run_e2e_job(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """One end-to-end row: the system built and timed, against the cached float64 and float32 eager outputs."""
    row = timed_row(spec)
    size, system = int(spec["size"]), spec["system"]
    device = torch.device(spec.get("device", "cpu"))
    generator = load_reference_generator(spec["model"], spec.get("checkpoint"), int(spec["seed"]))
    x = e2e_input(size, int(spec["seed"]))
    try:
        runner = build_e2e_system(system, generator, x, dtype_from_name(spec["dtype"]), device)
    except Unavailable as exc:
        row["status"] = f"unavailable: {exc}"
        return row
    del generator  # what the system still needs, it holds itself
    row["build_s"] = runner.build_s
    row["note"] = runner.note
    row.update(runner.extra)
    out = time_into(row, runner.fn, spec, device)
    row["time_to_first_output_s"] = row["build_s"] + row["first_call_s"]
    if not spec.get("parity", True):
        return row
    got = flat_output(out).view(1, 3, size, size)
    del out, runner
    row["output_std"] = float(got.std())
    paths = _spec_cache_paths(spec)
    if system == "eager":
        _save_atomic(got.float(), paths["float32"])
    reference64 = _load_cached(paths["float64"])
    if reference64 is not None:
        row["max_abs_err"] = float((got - reference64.double()).abs().max())
        row["max_abs_ref"] = float(reference64.abs().max())
        row["reference_std"] = float(reference64.std())
    reference32 = _load_cached(paths["float32"])
    if reference32 is not None:
        row.update(uint8_agreement(got, reference32))
    return row
