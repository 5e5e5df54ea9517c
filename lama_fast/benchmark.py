"""The benchmark harness: kernel-level and end-to-end timings of lama_fast and of its peers.

A *system* is one way of running a block or the whole generator: the
reference model eager or channels_last, ``torch.compile``, OpenVINO, ONNX
Runtime, our fused op or one of our backends.  A *row* is one measurement:
one (suite, block, shape, system, dtype) with its timings, memory, parity and
the machine it ran on.  A *job* computes one row; with ``isolate=True`` each
job runs in a fresh interpreter so that its peak resident memory is its own.
A system whose package or op is missing gives an ``unavailable: <reason>``
row, never an exception.

    python -m lama_fast.benchmark --job SPEC.json --out ROW.json

is the worker that runs one isolated job.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .fast.convert import fuse_spectral
from .fast.fold import batchnorm_scale_shift, fold_batchnorm
from .model.random import randomise_batchnorm
from .timing import machine_description, measure

BENCH_EXTRA = "pip install 'lama_fast[bench]'"
SUITES = ("kernels", "e2e")
KERNEL_BLOCKS = ("fourier_unit", "spectral_transform", "ffc_layer")
KERNEL_SYSTEMS = ("eager", "channels_last", "ours")
KERNEL_SIZES = (64, 128, 256)
PEER_SYSTEMS = ("compile", "openvino-f32", "openvino-bf16", "onnxruntime")
OURS_SYSTEMS = ("ours-f32", "ours-bf16")
E2E_SYSTEMS = ("eager", "channels_last") + PEER_SYSTEMS + OURS_SYSTEMS
E2E_SIZES = (512, 1024, 2048)
# Names that stand for several systems on the command line.
SYSTEM_ALIASES: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "kernels": {"reference": ("eager", "channels_last"), "all": KERNEL_SYSTEMS},
    "e2e": {
        "ours": OURS_SYSTEMS,
        "openvino": ("openvino-f32", "openvino-bf16"),
        "peers": PEER_SYSTEMS,
        "reference": ("eager", "channels_last"),
        "all": E2E_SYSTEMS,
    },
}
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
PEER_DISTRIBUTIONS = ("openvino", "onnxruntime", "onnx", "onnxscript", "matplotlib")
DTYPE_NAMES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16", torch.float16: "float16"}

# The kernel-level blocks at big-lama's widths: FourierUnit over the 192 hidden
# channels, SpectralTransform 384 -> 384, and one whole residual-block layer.
FOURIER_CHANNELS = 192
SPECTRAL_CHANNELS = 384
FFC_CHANNELS = 512
FFC_RATIO = 0.75

Inputs = Union[torch.Tensor, Tuple[torch.Tensor, ...]]
Progress = Callable[[str], None]


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


# --------------------------------------------------------------------------- machine


def cpu_flags() -> set:
    """The flags line of /proc/cpuinfo as a set (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> Dict[str, str]:
    """``timing.machine_description()`` plus the CPU flags and peer versions that decide the numbers."""
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


def _proc_status_bytes(key: str) -> Optional[int]:
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
    return _proc_status_bytes("VmRSS")


def peak_rss_bytes() -> Optional[int]:
    """Peak resident memory of this process since it started.

    Linux's VmHWM is the high-water mark of this process's own address space.
    ``ru_maxrss`` is the fallback only: after a fork/vfork + exec it starts at
    the parent's resident size, so a worker started by a large parent would
    report the parent's memory.
    """
    hwm = _proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return maxrss if sys.platform == "darwin" else maxrss * 1024


def ru_maxrss_bytes() -> Optional[int]:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (recorded beside VmHWM)."""
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return maxrss if sys.platform == "darwin" else maxrss * 1024


# --------------------------------------------------------------------------- BatchNorm folding


def fold_fourier_unit(fu: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """(w_freq, b_freq) of a FourierUnit: its 1x1 conv (2C, 2C) with its BatchNorm folded in, float32."""
    conv = fu.conv_layer
    weight, bias = fold_batchnorm(conv.weight, None, *batchnorm_scale_shift(fu.bn, conv.out_channels))
    return weight.flatten(1).float().contiguous(), bias.float().contiguous()


def fold_spectral_transform(st: nn.Module) -> Dict[str, torch.Tensor]:
    """w1 (Ch, Cin), b1, w_freq (2Ch, 2Ch), b_freq, w2 (Cout, Ch) of a SpectralTransform, BN folded, float32."""
    if getattr(st, "lfu", None) is not None or getattr(st, "stride", 1) != 1:
        raise Unavailable("the fused spectral op covers stride 1 without the local Fourier unit only")
    fused = fuse_spectral(st, None, torch.float32)
    return {name: getattr(fused, name) for name in ("w1", "b1", "w_freq", "b_freq", "w2")}


# --------------------------------------------------------------------------- kernel-level blocks


def build_kernel_block(block: str, seed: int = 0) -> nn.Module:
    """One of KERNEL_BLOCKS at big-lama's widths, seeded random weights, eval mode, float32."""
    from .model.ffc import FFC_BN_ACT, FourierUnit, SpectralTransform

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if block == "fourier_unit":
            module = FourierUnit(FOURIER_CHANNELS, FOURIER_CHANNELS)
        elif block == "spectral_transform":
            module = SpectralTransform(SPECTRAL_CHANNELS, SPECTRAL_CHANNELS)
        elif block == "ffc_layer":
            module = FFC_BN_ACT(FFC_CHANNELS, FFC_CHANNELS, kernel_size=3, ratio_gin=FFC_RATIO, ratio_gout=FFC_RATIO,
                                activation=True, padding=1, padding_type="reflect", enable_lfu=False)
        else:
            raise ValueError(f"unknown kernel block {block!r}; known: {', '.join(KERNEL_BLOCKS)}")
        randomise_batchnorm(module)
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def kernel_input(block: str, size: int, seed: int = 0) -> Inputs:
    """The block's input at ``size``x``size``, batch 1: a tensor, or (local, global) for the FFC layer."""
    gen = torch.Generator().manual_seed(seed * 7919 + size)
    if block == "ffc_layer":
        global_channels = int(FFC_CHANNELS * FFC_RATIO)
        return (torch.randn(1, FFC_CHANNELS - global_channels, size, size, generator=gen),
                torch.randn(1, global_channels, size, size, generator=gen))
    channels = FOURIER_CHANNELS if block == "fourier_unit" else SPECTRAL_CHANNELS
    return torch.randn(1, channels, size, size, generator=gen)


def kernel_shape(block: str, size: int) -> str:
    """The input shape as a label: '1x384x64x64', '1x(128+384)x64x64' for the FFC layer."""
    if block == "ffc_layer":
        global_channels = int(FFC_CHANNELS * FFC_RATIO)
        return f"1x({FFC_CHANNELS - global_channels}+{global_channels})x{size}x{size}"
    channels = FOURIER_CHANNELS if block == "fourier_unit" else SPECTRAL_CHANNELS
    return f"1x{channels}x{size}x{size}"


def _map_inputs(inputs: Inputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
    if isinstance(inputs, tuple):
        return tuple(None if t is None else fn(t) for t in inputs)
    return fn(inputs)


def _flat_output(out: Any) -> torch.Tensor:
    """Any output (tensor, numpy array, tuple of them) as one flat float64 tensor."""
    if isinstance(out, (tuple, list)):
        return torch.cat([_flat_output(o) for o in out if o is not None])
    if not isinstance(out, torch.Tensor):
        import numpy as np

        out = torch.from_numpy(np.asarray(out))
    return out.detach().to(torch.float64).reshape(-1)


def _spectral_op(name: str) -> Callable:
    try:
        ops = importlib.import_module("lama_fast.ops.spectral")
    except Exception as exc:  # not built yet, or a broken build: either way the row says so
        raise Unavailable(f"lama_fast.ops.spectral does not import ({type(exc).__name__}: {exc})") from None
    op = getattr(ops, name, None)
    if op is None:
        raise Unavailable(f"lama_fast.ops.spectral has no {name}()")
    return op


def _ours_module(module: nn.Module, dtype: torch.dtype, what: str, backend: str = "cpu") -> nn.Module:
    from .backends import available_backends, optimize

    reasons = available_backends("cpu", dtype)
    if backend not in reasons:
        raise Unavailable(f"lama_fast has no {backend!r} backend in this build (has: {', '.join(reasons)})")
    if reasons[backend] is not None:
        raise Unavailable(f"backend {backend!r} in {dtype_name(dtype)}: {reasons[backend]}")
    try:
        return optimize(module, backend=backend, device="cpu", dtype=dtype)
    except Exception as exc:
        raise Unavailable(f"lama_fast.optimize(backend={backend!r}) does not take {what} "
                          f"({type(exc).__name__}: {exc})") from None


def kernel_system(block: str, system: str, module: nn.Module, inputs: Inputs) -> Callable[[], Any]:
    """A no-argument callable running ``block`` the way ``system`` does, on ready-made inputs.

    Layout conversions happen here, outside the timed calls.  ``ours`` is the
    fused op for the Fourier unit and the spectral transform, called as
    ``fourier_unit(x, w_freq, b_freq, fft_norm)`` and
    ``spectral_transform(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm)``
    with BatchNorm folded into 2-D float32 weights; for the FFC layer it is the
    cpu backend's conversion of that layer (``lama_fast.fast.convert.convert_ffc_layer``,
    what ``lama_fast.optimize(generator, backend="cpu")`` builds each layer with).
    """
    if system == "eager":
        return lambda: module(inputs)
    channels_last = _map_inputs(inputs, lambda t: t.contiguous(memory_format=torch.channels_last))
    if system == "channels_last":
        converted = module.to(memory_format=torch.channels_last)
        return lambda: converted(channels_last)
    if system != "ours":
        raise ValueError(f"unknown kernel system {system!r}; known: {', '.join(KERNEL_SYSTEMS)}")
    if block == "fourier_unit":
        op = _spectral_op("fourier_unit")
        w_freq, b_freq = fold_fourier_unit(module)
        return lambda: op(channels_last, w_freq, b_freq, module.fft_norm)
    if block == "spectral_transform":
        op = _spectral_op("spectral_transform")
        p = fold_spectral_transform(module)
        norm = module.fu.fft_norm
        return lambda: op(channels_last, p["w1"], p["b1"], p["w_freq"], p["b_freq"], p["w2"], None, None, False, norm)
    fast = _ours_layer(module)
    return lambda: fast(channels_last)


def _ours_layer(layer: nn.Module) -> Callable[[Inputs], Any]:
    """The cpu backend's own conversion of one FFC_BN_ACT layer (what optimize() does per layer), when it has one."""
    from .backends import available_backends

    reasons = available_backends("cpu", torch.float32)
    if "cpu" not in reasons:
        raise Unavailable(f"lama_fast has no 'cpu' backend in this build (has: {', '.join(reasons)})")
    if reasons["cpu"] is not None:
        raise Unavailable(f"backend 'cpu' in float32: {reasons['cpu']}")
    try:
        from .fast.convert import convert_ffc_layer
    except ImportError:
        return _ours_module(layer, torch.float32, "a single FFC_BN_ACT layer")
    try:
        return convert_ffc_layer(layer, torch.float32, "ffc_layer")
    except Exception as exc:
        raise Unavailable(f"lama_fast.fast.convert.convert_ffc_layer does not take this layer "
                          f"({type(exc).__name__}: {exc})") from None


def spectral_transform_flops(cin: int, hidden: int, cout: int, height: int, width: int) -> int:
    """GEMM FLOPs of one SpectralTransform: conv1, the frequency-domain conv, conv2."""
    freq = height * (width // 2 + 1)
    return 2 * cin * hidden * height * width + 2 * (2 * hidden) ** 2 * freq + 2 * hidden * cout * height * width


def fourier_unit_flops(channels: int, height: int, width: int) -> int:
    """GEMM FLOPs of one FourierUnit: its frequency-domain 1x1 conv over 2C channels."""
    return 2 * (2 * channels) ** 2 * height * (width // 2 + 1)


def block_flops(block: str, size: int) -> Optional[int]:
    """GEMM FLOPs of the blocks that have a roofline (FourierUnit, SpectralTransform), else None."""
    if block == "fourier_unit":
        return fourier_unit_flops(FOURIER_CHANNELS, size, size)
    if block == "spectral_transform":
        return spectral_transform_flops(SPECTRAL_CHANNELS, SPECTRAL_CHANNELS // 2, SPECTRAL_CHANNELS, size, size)
    return None


def measure_rates(size: int, repeats: int = 3) -> Dict[str, float]:
    """This machine's sgemm (torch.mm) and oneDNN (1x1 conv2d, channels_last) GFLOP/s at the spectral
    transform's conv1 shape, and the time of rfft2 + irfft2 on (1, 192, size, size)."""
    hidden, cin = SPECTRAL_CHANNELS // 2, SPECTRAL_CHANNELS
    gen = torch.Generator().manual_seed(size)
    a = torch.randn(hidden, cin, generator=gen)
    b = torch.randn(cin, size * size, generator=gen)
    x = torch.randn(1, cin, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
    w = a.view(hidden, cin, 1, 1).contiguous(memory_format=torch.channels_last)
    y = torch.randn(1, hidden, size, size, generator=gen)
    flops = 2 * hidden * cin * size * size
    repeats = max(3, repeats)
    with torch.inference_mode():
        sgemm = measure(lambda: torch.mm(a, b), repeats=repeats, warmup=2).median
        onednn = measure(lambda: torch.nn.functional.conv2d(x, w), repeats=repeats, warmup=2).median
        fft = measure(lambda: torch.fft.irfft2(torch.fft.rfft2(y, norm="ortho"), s=(size, size), norm="ortho"),
                      repeats=repeats, warmup=2).median
    return {"sgemm_gflops": flops / sgemm / 1e9, "onednn_gflops": flops / onednn / 1e9, "fft_s": fft,
            "rate_gemm_shape": f"{hidden}x{cin} @ {cin}x{size * size}"}


# --------------------------------------------------------------------------- end to end


def load_reference_generator(model: Union[str, Mapping[str, Any]] = "big-lama", checkpoint: Optional[str] = None,
                             seed: int = 0) -> nn.Module:
    """The float32 reference generator: a checkpoint's weights, or seeded random ones in ``model``'s layout."""
    if checkpoint:
        from .checkpoint import load_generator

        generator = load_generator(checkpoint)
    else:
        from .model.random import random_generator

        generator = random_generator(model, seed=seed)
    generator = generator.float().eval()
    for parameter in generator.parameters():
        parameter.requires_grad_(False)
    return generator


def e2e_input(size: int, seed: int = 0) -> torch.Tensor:
    """A generator input (1, 4, size, size): a smooth random image with two rectangular holes, and the mask."""
    gen = torch.Generator().manual_seed(seed)
    coarse = max(2, size // 16)
    image = torch.nn.functional.interpolate(torch.rand(1, 3, coarse, coarse, generator=gen),
                                            size=(size, size), mode="bilinear", align_corners=False)
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 8: size // 3, size // 5: size // 2] = 1
    mask[..., size // 2: 3 * size // 4, size // 2: 7 * size // 8] = 1
    return torch.cat((image * (1 - mask), mask), dim=1)


@dataclass
class Runner:
    """A built system: ``fn()`` runs it once on its prepared input."""

    fn: Callable[[], Any]
    build_s: float = 0.0
    note: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


def _import_peer(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise Unavailable(f"{name} is not installed ({BENCH_EXTRA})") from None
    except Exception as exc:  # installed but broken (ABI clash with this torch, missing library)
        raise Unavailable(f"{name} does not import ({type(exc).__name__}: {exc})") from None


def system_dtype(system: str, dtype: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype a system computes in (``dtype`` is what ``backend:NAME`` systems use)."""
    if system.endswith("-bf16"):
        return torch.bfloat16
    if system.startswith("backend:"):
        return dtype
    return torch.float32


def _openvino_runner(generator: nn.Module, x: torch.Tensor, precision: str) -> Runner:
    ov = _import_peer("openvino")
    start = time.perf_counter()
    with torch.no_grad():
        model = ov.convert_model(generator, example_input=x)
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    compiled = ov.Core().compile_model(model, "CPU", config)
    compile_s = time.perf_counter() - start
    del model
    inputs = [x.numpy()]
    return Runner(lambda: compiled(inputs)[0], convert_s + compile_s,
                  f"convert {convert_s:.1f} s + compile {compile_s:.1f} s",
                  {"convert_s": convert_s, "compile_s": compile_s, "threads": torch.get_num_threads()})


def _onnxruntime_runner(generator: nn.Module, x: torch.Tensor) -> Runner:
    ort = _import_peer("onnxruntime")
    _import_peer("onnx")
    _import_peer("onnxscript")
    with tempfile.TemporaryDirectory(prefix="lama_fast_onnx_") as tmp:
        path = os.path.join(tmp, "generator.onnx")
        start = time.perf_counter()
        with torch.no_grad():
            torch.onnx.export(generator, (x,), path, dynamo=True, external_data=True, verbose=False)
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        session_s = time.perf_counter() - start
    feed = {session.get_inputs()[0].name: x.numpy()}
    return Runner(lambda: session.run(None, feed)[0], export_s + session_s,
                  f"export {export_s:.1f} s + session {session_s:.1f} s",
                  {"export_s": export_s, "session_s": session_s, "threads": torch.get_num_threads()})


def _compile_runner(generator: nn.Module, x: torch.Tensor) -> Runner:
    from torch._inductor import config as inductor_config

    compiled = torch.compile(generator, backend="inductor")

    def run():
        # Freezing applies when the first call compiles; patching it per call keeps the global config untouched.
        with inductor_config.patch(freezing=True):
            return compiled(x)

    return Runner(run, 0.0, "inductor with freezing; the compile happens inside the first call")


def build_e2e_system(system: str, generator: nn.Module, x: torch.Tensor, dtype: torch.dtype = torch.float32,
                     device: Union[str, torch.device] = "cpu") -> Runner:
    """Build ``system`` around the float32 reference ``generator`` for input ``x`` (may modify the generator)."""
    if system == "eager":
        return Runner(lambda: generator(x))
    if system == "channels_last":
        start = time.perf_counter()
        converted = generator.to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        return Runner(lambda: converted(x_cl), time.perf_counter() - start)
    if system == "compile":
        return _compile_runner(generator, x)
    if system in ("openvino-f32", "openvino-bf16"):
        return _openvino_runner(generator, x, "bf16" if system.endswith("bf16") else "f32")
    if system == "onnxruntime":
        return _onnxruntime_runner(generator, x)
    if system in OURS_SYSTEMS or system.startswith("backend:"):
        backend = "cpu" if system in OURS_SYSTEMS else system.split(":", 1)[1]
        dtype = system_dtype(system, dtype)
        start = time.perf_counter()
        if system in OURS_SYSTEMS:
            module = _ours_module(generator, dtype, "the generator", backend)
        else:
            from .backends import optimize

            module = optimize(generator, backend=backend, device=device, dtype=dtype)
        build_s = time.perf_counter() - start
        # Our fast modules take the reference's float32 input whatever they compute in (the cast is
        # theirs, and timed); other backends get the input in their dtype.
        x_in = x.to(device=device, dtype=torch.float32 if system in OURS_SYSTEMS else dtype)
        return Runner(lambda: module(x_in), build_s, f"lama_fast.optimize(backend={backend!r})")
    raise ValueError(f"unknown end-to-end system {system!r}; known: {', '.join(E2E_SYSTEMS)}, backend:NAME")


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


# --------------------------------------------------------------------------- jobs


def model_label(model: Union[str, Mapping[str, Any], None], checkpoint: Optional[str] = None) -> str:
    """'big-lama', the checkpoint's path, or 'config(ngf=8, n_blocks=1, ...)' for a config mapping."""
    if checkpoint:
        return str(checkpoint)
    if isinstance(model, Mapping):
        keys = ("ngf", "n_downsampling", "n_blocks")
        return "config(" + ", ".join(f"{k}={model[k]}" for k in keys if k in model) + ")"
    return str(model)


def new_row(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """The skeleton of a row: what it measures, before any number."""
    row = {key: spec.get(key) for key in ("suite", "block", "shape", "size", "system", "dtype", "run_id")}
    row.update(status="ok", first_call_s=None, median_s=None, spread_s=None, runs_s=[], build_s=None, note="",
               rss_before_bytes=None, peak_rss_bytes=None, ru_maxrss_bytes=None, max_abs_err=None,
               max_abs_ref=None, output_std=None, isolated=bool(spec.get("isolated")),
               repeats=spec.get("repeats"), warmup=spec.get("warmup"))
    if spec.get("suite") == "e2e":
        row.update(model=model_label(spec.get("model"), spec.get("checkpoint")), seed=spec.get("seed"),
                   device=spec.get("device", "cpu"), u8_max_diff=None, u8_within1=None, u8_within2=None)
        if str(spec.get("system", "")).startswith("backend:"):
            row["backend"] = spec["system"].split(":", 1)[1]
    return row


def _time_into(row: Dict[str, Any], fn: Callable[[], Any], spec: Mapping[str, Any],
               device: torch.device = torch.device("cpu")) -> Any:
    """Time ``fn`` into ``row`` (first call, median, spread, memory) and return its last output."""
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


def _run_kernel_job(spec: Mapping[str, Any]) -> Dict[str, Any]:
    row = new_row(spec)
    block, size, system = spec["block"], int(spec["size"]), spec["system"]
    module = build_kernel_block(block, int(spec.get("seed", 0)))
    inputs = kernel_input(block, size, int(spec.get("seed", 0)))
    reference = copy.deepcopy(module) if spec.get("parity", True) else None
    try:
        fn = kernel_system(block, system, module, inputs)
    except Unavailable as exc:
        row["status"] = f"unavailable: {exc}"
        return row
    out = _time_into(row, fn, spec)
    if reference is not None:
        got = _flat_output(out)
        del out, fn
        with torch.inference_mode():
            expected = _flat_output(reference.double()(_map_inputs(inputs, lambda t: t.double())))
        row["max_abs_err"] = float((got - expected).abs().max())
        row["max_abs_ref"] = float(expected.abs().max())
        row["output_std"] = float(got.std())
    return row


def _run_rates_job(spec: Mapping[str, Any]) -> Dict[str, Any]:
    return {"status": "ok", **measure_rates(int(spec["size"]), int(spec.get("repeats", 3)))}


# PyTorch's float64 convolution unfolds its whole input (im2col): for the 7x7 output
# convolution at 1024x1024 that is 26 GB, at 2048x2048 105 GB.  Above this size the
# float64 reference output comes from lama_fast's float64 rewrite of the same
# generator, which runs the large layers in stripes and which the test suite checks
# against the reference model to 1e-12 (tests/test_fast.py, striped layers included).
FLOAT64_REFERENCE_MAX_SIZE = 512


def _float64_in_stripes(generator: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    from .fast import build_fast_generator, layers

    fast = build_fast_generator(generator, torch.float64)
    fast.keep_buffers = False
    saved = layers.STRIPE_ABOVE_BYTES, layers.STRIPE_BYTES
    layers.STRIPE_ABOVE_BYTES, layers.STRIPE_BYTES = 16 << 20, 4 << 20
    try:
        return fast(x.double())
    finally:
        layers.STRIPE_ABOVE_BYTES, layers.STRIPE_BYTES = saved


def _run_reference_job(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """Compute the missing cached outputs of one size: float64 reference, float32 eager if asked."""
    size = int(spec["size"])
    paths = reference_cache_paths(spec["cache_dir"], spec["model"], spec.get("checkpoint"), int(spec["seed"]), size)
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


def _run_e2e_job(spec: Mapping[str, Any]) -> Dict[str, Any]:
    row = new_row(spec)
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
    out = _time_into(row, runner.fn, spec, device)
    row["time_to_first_output_s"] = row["build_s"] + row["first_call_s"]
    if not spec.get("parity", True):
        return row
    got = _flat_output(out).view(1, 3, size, size)
    del out, runner
    row["output_std"] = float(got.std())
    paths = reference_cache_paths(spec["cache_dir"], spec["model"], spec.get("checkpoint"), int(spec["seed"]), size)
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


JOBS: Dict[str, Callable[[Mapping[str, Any]], Dict[str, Any]]] = {
    "kernel": _run_kernel_job,
    "rates": _run_rates_job,
    "reference": _run_reference_job,
    "e2e": _run_e2e_job,
}


def execute_job(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """Run one job in this process; an unexpected exception becomes an ``error: ...`` row."""
    try:
        return JOBS[spec["job"]](spec)
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        row = new_row(spec)
        row["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        return row


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def run_job(spec: Mapping[str, Any], isolate: bool = True, timeout_s: Optional[float] = None) -> Dict[str, Any]:
    """Run one job, in a fresh interpreter when ``isolate``; a crash or timeout becomes an ``error`` row."""
    spec = {**spec, "isolated": bool(isolate)}
    if not isolate:
        return execute_job(spec)
    with tempfile.TemporaryDirectory(prefix="lama_fast_bench_") as tmp:
        job_path, out_path, log_path = (os.path.join(tmp, n) for n in ("job.json", "row.json", "worker.log"))
        with open(job_path, "w") as f:
            json.dump(spec, f)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "lama_fast.benchmark", "--job", job_path, "--out", out_path]
        with open(log_path, "w") as log:
            try:
                proc = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      env=env, timeout=timeout_s)
                failure = None if proc.returncode == 0 else _exit_reason(proc.returncode)
            except subprocess.TimeoutExpired:
                failure = f"the worker ran past {timeout_s:g} s and was stopped"
        if failure is None and os.path.isfile(out_path):
            with open(out_path) as f:
                return json.load(f)
        with open(log_path, errors="replace") as log:
            tail = log.read()[-4000:]
        if tail.strip():
            print(tail, file=sys.stderr)
        row = new_row(spec)
        row["status"] = f"error: {failure or 'the worker wrote no row'}"
        return row


def _exit_reason(code: int) -> str:
    if code < 0:
        import signal

        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        hint = " (out of memory?)" if -code == 9 else ""
        return f"the worker was killed by {name}{hint}"
    return f"the worker exited with status {code}"


# --------------------------------------------------------------------------- plans and the run


def expand_systems(suite: str, names: Optional[Iterable[str]]) -> List[str]:
    """Resolve system names and aliases ('ours', 'peers', 'all', ...) to this suite's systems, in order.

    Names that belong to the other suite only are dropped, so one ``--systems``
    list serves both suites; a name neither suite knows raises.
    """
    known = KERNEL_SYSTEMS if suite == "kernels" else E2E_SYSTEMS
    if names is None:
        return list(known)
    out: List[str] = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        if name in SYSTEM_ALIASES[suite]:
            expanded = SYSTEM_ALIASES[suite][name]
        elif name in known or (suite == "e2e" and name.startswith("backend:")):
            expanded = (name,)
        elif name.startswith("backend:") or any(
                name in SYSTEM_ALIASES[s] or name in (KERNEL_SYSTEMS if s == "kernels" else E2E_SYSTEMS)
                for s in SUITES):
            expanded = ()
        else:
            raise ValueError(f"unknown system {name!r}; kernel systems: {', '.join(KERNEL_SYSTEMS)}; "
                             f"end-to-end systems: {', '.join(E2E_SYSTEMS)}, backend:NAME; "
                             f"aliases: ours, openvino, peers, reference, all")
        out.extend(s for s in expanded if s not in out)
    return out


@dataclass
class BenchConfig:
    """What to run and how: the model, the repetition counts, isolation and the cache of reference outputs."""

    model: Union[str, Dict[str, Any]] = "big-lama"
    checkpoint: Optional[str] = None
    seed: int = 0
    repeats: int = 3
    warmup: int = 1
    isolate: bool = True
    parity: bool = True
    cache_dir: str = os.path.join("bench", ".cache")
    dtype: str = "float32"
    device: str = "cpu"
    job_timeout_s: Optional[float] = None
    blocks: Sequence[str] = KERNEL_BLOCKS


# Nominal seconds on a 2-core Zen 4 (see DESIGN.md); only for the duration estimate printed before a run.
_EAGER_512_S = 3.2
_E2E_FACTOR = {"eager": 1.0, "channels_last": 0.8, "compile": 0.75, "openvino-f32": 1.0, "openvino-bf16": 0.6,
               "onnxruntime": 1.25, "ours-f32": 0.6, "ours-bf16": 0.45}
_E2E_SETUP_S = {"compile": 60.0, "openvino-f32": 28.0, "openvino-bf16": 28.0, "onnxruntime": 30.0}
_KERNEL_64_S = {"fourier_unit": 0.006, "spectral_transform": 0.0127, "ffc_layer": 0.055}
_WORKER_START_S = 3.0


def _eager_call_s(size: int, model: Any) -> float:
    scale = (size / 512) ** 2 * (1 + 0.28 * max(0.0, math.log2(size / 512)))
    blocks = 18
    if isinstance(model, str) and model == "lama-fourier":
        blocks = 9
    elif isinstance(model, Mapping):
        blocks = int(model.get("n_blocks", 18)) * (int(model.get("ngf", 64)) / 64) ** 2
    return _EAGER_512_S * scale * (0.15 + 0.85 * blocks / 18)


def estimate_seconds(kernel_sizes: Sequence[int], e2e_plan: Sequence[Tuple[int, Sequence[str]]],
                     config: BenchConfig, kernel_systems: Sequence[str] = KERNEL_SYSTEMS) -> float:
    """A rough duration of a run, from nominal 2-core timings scaled by this machine's thread count."""
    calls = config.warmup + config.repeats
    total = 0.0
    for size in kernel_sizes:
        total += _WORKER_START_S + 1.0
        for block in config.blocks:
            per_call = _KERNEL_64_S.get(block, 0.05) * (size / 64) ** 2 * (1 + 0.3 * math.log2(max(1, size / 64)))
            total += len(kernel_systems) * (_WORKER_START_S + calls * per_call) + (3 * per_call if config.parity else 0)
    cache_dir = Path(config.cache_dir)
    for size, systems in e2e_plan:
        eager = _eager_call_s(size, config.model)
        if config.parity:
            paths = reference_cache_paths(cache_dir, config.model, config.checkpoint, config.seed, size)
            if not paths["float64"].is_file():
                total += _WORKER_START_S + 2.5 * eager
        for system in systems:
            factor = _E2E_FACTOR.get(system, 1.0)
            setup = _E2E_SETUP_S.get(system, 0.0) * (1 + 0.5 * max(0.0, math.log2(size / 512)))
            traced = eager if system.startswith(("openvino", "onnx")) else 0.0
            total += _WORKER_START_S + setup + traced + calls * factor * eager
    return total * 2 / max(1, torch.get_num_threads())


def _default_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fmt_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _row_summary(row: Mapping[str, Any]) -> str:
    if row.get("status") != "ok":
        return row.get("status", "?")
    parts = [f"median {row['median_s']:.4g} s", f"first call {row['first_call_s']:.4g} s"]
    if row.get("build_s"):
        parts.append(f"build {row['build_s']:.3g} s")
    if row.get("max_abs_err") is not None:
        parts.append(f"max abs err {row['max_abs_err']:.2e}")
    if row.get("peak_rss_bytes"):
        parts.append(f"peak RSS {row['peak_rss_bytes'] / 2**20:.0f} MiB")
    return ", ".join(parts)


def run_benchmarks(kernel_sizes: Sequence[int] = (), e2e_plan: Sequence[Tuple[int, Sequence[str]]] = (),
                   config: Optional[BenchConfig] = None, kernel_systems: Sequence[str] = KERNEL_SYSTEMS,
                   progress: Optional[Progress] = _default_progress,
                   on_row: Optional[Callable[[List[Dict[str, Any]]], None]] = None) -> List[Dict[str, Any]]:
    """Run the kernel suite at ``kernel_sizes`` and the end-to-end plan [(size, systems)]; returns the rows.

    Every row carries the machine and a ``run_id`` shared by the rows of this
    call, and the speed-ups against eager and torch.compile of the same run.
    ``on_row(rows_so_far)`` is called after each row, so a long run can save
    what it has.
    """
    config = config or BenchConfig()
    say = progress or (lambda message: None)
    machine = machine_info()
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S") + f"-{os.getpid()}"
    started = time.perf_counter()
    kernel_jobs = len(kernel_sizes) * len(config.blocks) * len(kernel_systems)
    e2e_jobs = sum(len(systems) for _, systems in e2e_plan)
    total_jobs = kernel_jobs + e2e_jobs
    estimate = estimate_seconds(kernel_sizes, e2e_plan, config, kernel_systems)
    say(f"benchmark: {kernel_jobs} kernel rows, {e2e_jobs} end-to-end rows, expected duration about "
        f"{_fmt_duration(estimate)} ({'a subprocess per row' if config.isolate else 'in this process'})")
    common = {"repeats": config.repeats, "warmup": config.warmup, "seed": config.seed, "parity": config.parity,
              "run_id": run_id, "cache_dir": str(config.cache_dir)}
    rows: List[Dict[str, Any]] = []
    done = 0

    def run_logged(spec: Dict[str, Any], label: str) -> Dict[str, Any]:
        nonlocal done
        done += 1
        say(f"[{done}/{total_jobs} {_fmt_duration(time.perf_counter() - started)}] {label}: start")
        job_start = time.perf_counter()
        row = run_job(spec, config.isolate, config.job_timeout_s)
        row["machine"] = machine
        say(f"[{done}/{total_jobs} {_fmt_duration(time.perf_counter() - started)}] {label}: done in "
            f"{_fmt_duration(time.perf_counter() - job_start)}: {_row_summary(row)}")
        return row

    for size in kernel_sizes:
        say(f"kernels {size}x{size}: measuring the sgemm / oneDNN rates and the FFT time")
        rates = run_job({**common, "job": "rates", "suite": "kernels", "size": size}, config.isolate,
                        config.job_timeout_s)
        for block in config.blocks:
            for system in kernel_systems:
                spec = {**common, "job": "kernel", "suite": "kernels", "block": block, "size": size,
                        "shape": kernel_shape(block, size), "system": system, "dtype": "float32"}
                row = run_logged(spec, f"kernels {block} {size}x{size} {system}")
                _attach_roofline(row, rates, block_flops(block, size))
                rows.append(row)
                add_speedups(rows)
                if on_row:
                    on_row(rows)

    for size, systems in e2e_plan:
        shape = f"1x4x{size}x{size}"
        e2e_common = {**common, "suite": "e2e", "block": "generator", "size": size, "shape": shape,
                      "model": config.model, "checkpoint": config.checkpoint, "device": config.device}
        if config.parity:
            say(f"e2e {size}x{size}: float64 reference output (cached in {config.cache_dir})")
            ref_start = time.perf_counter()
            result = run_job({**e2e_common, "job": "reference", "need_float32": "eager" not in systems},
                             config.isolate, config.job_timeout_s)
            if result.get("status") != "ok":
                say(f"e2e {size}x{size}: the reference output failed ({result.get('status')}); rows lack parity")
            else:
                what = ", ".join(result.get("computed") or []) or "all cached"
                say(f"e2e {size}x{size}: reference outputs ready ({what}) in "
                    f"{_fmt_duration(time.perf_counter() - ref_start)}")
        # Eager first: its output is the float32 reference of the uint8 check.
        ordered = sorted(systems, key=lambda s: s != "eager")
        for system in ordered:
            spec = {**e2e_common, "job": "e2e", "system": system,
                    "dtype": dtype_name(system_dtype(system, dtype_from_name(config.dtype)))}
            rows.append(run_logged(spec, f"e2e {system} {size}x{size}"))
            add_speedups(rows)
            if on_row:
                on_row(rows)

    add_speedups(rows)
    say(f"benchmark: {len(rows)} rows in {_fmt_duration(time.perf_counter() - started)} "
        f"(estimated {_fmt_duration(estimate)})")
    return rows


def _attach_roofline(row: Dict[str, Any], rates: Mapping[str, Any], flops: Optional[int]) -> None:
    if flops is None or rates.get("status") != "ok":
        return
    row["gemm_flops"] = flops
    for key in ("sgemm_gflops", "onednn_gflops", "fft_s", "rate_gemm_shape"):
        row[key] = rates[key]
    row["roofline_sgemm_s"] = flops / (rates["sgemm_gflops"] * 1e9) + rates["fft_s"]
    row["roofline_onednn_s"] = flops / (rates["onednn_gflops"] * 1e9) + rates["fft_s"]
    if row.get("median_s"):
        row["x_roofline_sgemm"] = row["median_s"] / row["roofline_sgemm_s"]
        row["x_roofline_onednn"] = row["median_s"] / row["roofline_onednn_s"]


def add_speedups(rows: List[Dict[str, Any]]) -> None:
    """Set speedup_vs_eager and speedup_vs_compile (baseline median / row median) within each run."""
    medians: Dict[Tuple[Any, ...], float] = {}
    for row in rows:
        if row.get("status") == "ok" and row.get("median_s"):
            medians[(row.get("run_id"), row.get("suite"), row.get("block"), row.get("size"), row.get("system"))] = \
                row["median_s"]
    for row in rows:
        if row.get("status") != "ok" or not row.get("median_s"):
            continue
        key = (row.get("run_id"), row.get("suite"), row.get("block"), row.get("size"))
        for baseline in ("eager", "compile"):
            if key + (baseline,) in medians:
                row[f"speedup_vs_{baseline}"] = medians[key + (baseline,)] / row["median_s"]


# --------------------------------------------------------------------------- reports


def append_json(rows: Sequence[Mapping[str, Any]], path: Union[str, Path]) -> None:
    """Append rows to a JSON list file (created if missing), atomically."""
    from ._io import atomic_write_bytes

    path = Path(path)
    existing = json.loads(path.read_text()) if path.exists() and path.stat().st_size else []
    atomic_write_bytes(path, json.dumps(list(existing) + list(rows), indent=1).encode())


def _cell(value: Any, fmt: str, scale: float = 1.0) -> str:
    if value is None:
        return "—"
    return format(value * scale, fmt)


def _markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def _ratio(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def _mib(value: Optional[int]) -> str:
    return "—" if not value else f"{value / 2**20:.0f}"


def _machine_line(machine: Mapping[str, Any]) -> str:
    versions = ", ".join(f"{k} {machine[k]}" for k in ("torch", "openvino", "onnxruntime")
                         if machine.get(k) and machine[k] != "not installed")
    return (f"{machine.get('cpu', '?')}, {machine.get('threads', '?')} threads, CPU flags: "
            f"{machine.get('cpu_flags', '-')}; Python {machine.get('python', '?')}, {versions}")


def kernel_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The kernel suite as markdown: the measured rates, then one table row per (block, size, system)."""
    rows = [r for r in rows if r.get("suite") == "kernels"]
    if not rows:
        return ""
    rates: Dict[int, Mapping[str, Any]] = {}
    for r in rows:
        if r.get("sgemm_gflops") is not None:
            rates.setdefault(r["size"], r)
    parts = ["## Kernels (batch 1, float32)", ""]
    if rates:
        parts += [
            "Rates measured in this run at the spectral transform's conv1 shape (the roofline's denominators):",
            "",
            _markdown_table(
                ("spatial", "GEMM", "sgemm (torch.mm) GFLOP/s", "oneDNN 1x1 conv GFLOP/s", "rfft2+irfft2 (1x192) ms"),
                [(f"{s}x{s}", r["rate_gemm_shape"], f"{r['sgemm_gflops']:.0f}", f"{r['onednn_gflops']:.0f}",
                  f"{r['fft_s'] * 1e3:.2f}") for s, r in sorted(rates.items())]),
            "",
        ]
    table = []
    for r in rows:
        ok = r.get("status") == "ok"
        roofline = "—"
        if ok and r.get("roofline_sgemm_s"):
            roofline = (f"{r['roofline_sgemm_s'] * 1e3:.1f} / {r['roofline_onednn_s'] * 1e3:.1f} ms "
                        f"(×{r['x_roofline_sgemm']:.2f} / ×{r['x_roofline_onednn']:.2f})")
        extra = None
        if r.get("peak_rss_bytes") and r.get("rss_before_bytes"):
            extra = r["peak_rss_bytes"] - r["rss_before_bytes"]
        table.append((
            r.get("block", ""), r.get("shape", ""), r.get("system", ""),
            _cell(r.get("median_s"), ".2f", 1e3), _cell(r.get("spread_s"), ".2f", 1e3),
            _cell(r.get("first_call_s"), ".2f", 1e3), _mib(r.get("peak_rss_bytes")),
            "—" if extra is None else f"{extra / 2**20:+.0f}",
            _cell(r.get("max_abs_err"), ".1e"), _cell(r.get("max_abs_ref"), ".2g"),
            _ratio(r.get("speedup_vs_eager")), roofline, "ok" if ok else r.get("status", ""),
        ))
    parts.append(_markdown_table(
        ("block", "input", "system", "median ms", "spread ms", "first call ms", "peak RSS MiB", "calls' extra MiB",
         "max abs err vs f64", "max abs ref", "speed-up vs eager", "roofline sgemm / oneDNN (time ÷ roofline)",
         "status"), table))
    return "\n".join(parts)


def e2e_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The end-to-end suite as markdown: one table row per (system, size)."""
    rows = [r for r in rows if r.get("suite") == "e2e"]
    if not rows:
        return ""
    models = sorted({str(r.get("model")) for r in rows})
    table = []
    for r in sorted(rows, key=lambda r: (r.get("size") or 0, E2E_SYSTEMS.index(r["system"])
                                         if r.get("system") in E2E_SYSTEMS else 99)):
        ok = r.get("status") == "ok"
        within = "—"
        if r.get("u8_within1") is not None:
            within = f"{r['u8_within1'] * 100:.2f} / {r['u8_within2'] * 100:.2f}"
        table.append((
            r.get("system", ""), f"{r.get('size')}²", r.get("dtype", ""), _cell(r.get("build_s"), ".1f"),
            _cell(r.get("first_call_s"), ".2f"), _cell(r.get("median_s"), ".3f"), _cell(r.get("spread_s"), ".3f"),
            _ratio(r.get("speedup_vs_eager")), _ratio(r.get("speedup_vs_compile")),
            _mib(r.get("peak_rss_bytes")), _mib(r.get("rss_before_bytes")),
            _cell(r.get("max_abs_err"), ".1e"), _cell(r.get("output_std"), ".4f"),
            "—" if r.get("u8_max_diff") is None else str(r["u8_max_diff"]), within,
            "ok" if ok else r.get("status", ""),
        ))
    return "\n".join([
        f"## End to end ({', '.join(models)}, batch 1)",
        "",
        _markdown_table(
            ("system", "size", "dtype", "build s", "first call s", "median s", "spread s", "speed-up vs eager",
             "speed-up vs compile", "peak RSS MiB", "RSS after build MiB", "max abs err vs f64", "output std",
             "uint8 max diff", "uint8 ≤1 / ≤2 levels %", "status"), table),
    ])


def markdown_report(rows: Sequence[Mapping[str, Any]], title: str = "lama_fast CPU benchmarks") -> str:
    """A markdown report of rows: the machine, then a table per suite."""
    machines = []
    for r in rows:
        line = _machine_line(r.get("machine") or {})
        if line not in machines:
            machines.append(line)
    runs = sorted({str(r.get("run_id")) for r in rows if r.get("run_id")})
    repeats = sorted({(r.get("repeats"), r.get("warmup")) for r in rows if r.get("repeats")}, key=str)
    head = [f"# {title}", ""]
    head += [f"Machine: {m}." for m in machines]
    if runs:
        head.append(f"Run{'s' if len(runs) > 1 else ''}: {', '.join(runs)}; "
                    + "; ".join(f"{rep} timed runs after {w} warm-up call(s)" for rep, w in repeats) + ".")
    head += ["", "Times are comparable only within one run on one machine; speed-ups are computed from the "
             "same run. Column meanings: bench/README.md.", ""]
    sections = [s for s in (kernel_markdown(rows), e2e_markdown(rows)) if s]
    return "\n".join(head) + "\n" + "\n\n".join(sections) + "\n"


def plot_e2e(rows: Sequence[Mapping[str, Any]], path: Union[str, Path]) -> bool:
    """Median time against resolution per system, log-log, to a PNG; False when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: Dict[str, List[Tuple[int, float]]] = {}
    for r in rows:
        if r.get("suite") == "e2e" and r.get("status") == "ok" and r.get("median_s"):
            series.setdefault(f"{r['system']} ({r.get('dtype')})", []).append((r["size"], r["median_s"]))
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=120)
    for label, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    sizes = sorted({p[0] for pts in series.values() for p in pts})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{s}²" for s in sizes])
    ax.set_xlabel("input resolution (pixels)")
    ax.set_ylabel("median time per call (s)")
    machine = next((r.get("machine") for r in rows if r.get("machine")), {}) or {}
    models = sorted({str(r.get("model")) for r in rows if r.get("suite") == "e2e" and r.get("model")})
    ax.set_title(f"LaMa generator ({', '.join(models) or '?'}), batch 1, {machine.get('cpu', 'CPU')} "
                 f"({machine.get('threads', '?')} threads)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def _worker_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Run one benchmark job (the harness's isolated worker).")
    parser.add_argument("--job", required=True, help="JSON file with the job's spec")
    parser.add_argument("--out", required=True, help="where to write the row as JSON")
    args = parser.parse_args(argv)
    with open(args.job) as f:
        spec = json.load(f)
    row = execute_job(spec)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(row, f)
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
