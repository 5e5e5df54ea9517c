"""The kernel suite's blocks at big-lama's widths: their inputs, GEMM FLOPs, this machine's rates, the ways of
running them (systems) and the kernel and rates jobs."""

from __future__ import annotations

import copy
import importlib
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from .core import Unavailable, flat_output, measure, time_into, timed_row
from .plan import KERNEL_BLOCKS, KERNEL_SYSTEMS
from .systems import require_backend

# The kernel-level blocks at big-lama's widths: FourierUnit over the 192 hidden
# channels, SpectralTransform 384 -> 384, and one whole residual-block layer.
FOURIER_CHANNELS = 192
SPECTRAL_CHANNELS = 384
FFC_CHANNELS = 512
FFC_RATIO = 0.75
SPECTRAL_WEIGHTS = ("w1", "b1", "w_freq", "b_freq", "w2")

Inputs = Union[torch.Tensor, Tuple[torch.Tensor, ...]]


def build_kernel_block(block: str, seed: int = 0) -> nn.Module:
    """One of KERNEL_BLOCKS at big-lama's widths, seeded random weights, eval mode, float32."""
    from ..model.ffc import FFC_BN_ACT, FourierUnit, SpectralTransform
    from ..model.random import randomise_batchnorm

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


def _channels(block: str) -> Tuple[int, ...]:
    """The block's input channels: (C,), or (local, global) for the FFC layer."""
    if block == "ffc_layer":
        global_channels = int(FFC_CHANNELS * FFC_RATIO)
        return FFC_CHANNELS - global_channels, global_channels
    return (FOURIER_CHANNELS if block == "fourier_unit" else SPECTRAL_CHANNELS,)


def kernel_input(block: str, size: int, seed: int = 0) -> Inputs:
    """The block's input at ``size``x``size``, batch 1: a tensor, or (local, global) for the FFC layer."""
    gen = torch.Generator().manual_seed(seed * 7919 + size)
    tensors = tuple(torch.randn(1, c, size, size, generator=gen) for c in _channels(block))
    return tensors if block == "ffc_layer" else tensors[0]


def kernel_shape(block: str, size: int) -> str:
    """The input shape as a label: '1x384x64x64', '1x(128+384)x64x64' for the FFC layer."""
    channels = _channels(block)
    label = f"({'+'.join(map(str, channels))})" if len(channels) > 1 else str(channels[0])
    return f"1x{label}x{size}x{size}"


def _map_inputs(inputs: Inputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
    if isinstance(inputs, tuple):
        return tuple(None if t is None else fn(t) for t in inputs)
    return fn(inputs)


# --------------------------------------------------------------------------- folded weights


def fold_spectral_transform(st: nn.Module) -> Dict[str, torch.Tensor]:
    """w1 (Ch, Cin), b1, w_freq (2Ch, 2Ch), b_freq, w2 (Cout, Ch) of a SpectralTransform, BN folded, float32."""
    if getattr(st, "lfu", None) is not None or getattr(st, "stride", 1) != 1:
        raise Unavailable("the fused spectral op covers stride 1 without the local Fourier unit only")
    from ..rewrite import fold_spectral  # the device-neutral fold of lama_fast.rewrite

    folded = fold_spectral(st)
    return {name: _float32(getattr(folded, name)) for name in SPECTRAL_WEIGHTS}


def _float32(t: torch.Tensor) -> torch.Tensor:
    """A folded weight as the op takes it: 2-D (1x1 kernels flattened) or 1-D, float32, contiguous."""
    return (t.flatten(1) if t.dim() > 2 else t).float().contiguous()


def _spectral_op(name: str) -> Callable:
    try:
        ops = importlib.import_module("lama_fast.ops.spectral")
    except Exception as exc:  # not built yet, or a broken build: either way the row says so
        raise Unavailable(f"lama_fast.ops.spectral does not import ({type(exc).__name__}: {exc})") from None
    op = getattr(ops, name, None)
    if op is None:
        raise Unavailable(f"lama_fast.ops.spectral has no {name}()")
    return op


def kernel_system(block: str, system: str, module: nn.Module, inputs: Inputs) -> Callable[[], Any]:
    """A no-argument callable running ``block`` the way ``system`` does, on ready-made inputs.

    Layout conversions happen here, outside the timed calls.  ``ours`` is the
    fused op for the Fourier unit and the spectral transform, called as
    ``fourier_unit(x, w_freq, b_freq, fft_norm)`` and
    ``spectral_transform(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm)``
    with BatchNorm folded into 2-D float32 weights; for the FFC layer it is the
    cpu backend's conversion of that layer (``lama_fast.fast.convert_ffc_layer``,
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
        from ..rewrite import fold_fourier_unit  # the device-neutral fold of lama_fast.rewrite

        w_freq, b_freq = (_float32(t) for t in fold_fourier_unit(module))
        return lambda: op(channels_last, w_freq, b_freq, module.fft_norm)
    if block == "spectral_transform":
        op = _spectral_op("spectral_transform")
        p = fold_spectral_transform(module)
        norm = module.fu.fft_norm
        return lambda: op(channels_last, p["w1"], p["b1"], p["w_freq"], p["b_freq"], p["w2"], None, None, False, norm)
    fast = _ours_layer(module)
    return lambda: fast(channels_last)


def _ours_layer(layer: nn.Module) -> Callable[[Inputs], Any]:
    """The cpu backend's own conversion of one FFC_BN_ACT layer (what optimize() does per layer)."""
    from ..fast import convert_ffc_layer

    require_backend("cpu", torch.float32)
    try:
        return convert_ffc_layer(layer, torch.float32, "ffc_layer")
    except Exception as exc:
        raise Unavailable(f"lama_fast.fast.convert_ffc_layer does not take this layer "
                          f"({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------- FLOPs and rates


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


def attach_roofline(row: Dict[str, Any], rates: Mapping[str, Any], flops: Optional[int]) -> None:
    """The row's roofline times from this run's rates and the block's GEMM FLOPs, and its time over them."""
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


# --------------------------------------------------------------------------- jobs


def run_kernel_job(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """One kernel row: the block run by the system, timed, against the same block in float64."""
    row = timed_row(spec)
    block, size, system = spec["block"], int(spec["size"]), spec["system"]
    module = build_kernel_block(block, int(spec.get("seed", 0)))
    inputs = kernel_input(block, size, int(spec.get("seed", 0)))
    reference = copy.deepcopy(module) if spec.get("parity", True) else None
    try:
        fn = kernel_system(block, system, module, inputs)
    except Unavailable as exc:
        row["status"] = f"unavailable: {exc}"
        return row
    out = time_into(row, fn, spec)
    if reference is not None:
        got = flat_output(out)
        del out, fn
        with torch.inference_mode():
            expected = flat_output(reference.double()(_map_inputs(inputs, lambda t: t.double())))
        row["max_abs_err"] = float((got - expected).abs().max())
        row["max_abs_ref"] = float(expected.abs().max())
        row["output_std"] = float(got.std())
    return row


def run_rates_job(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """This machine's GEMM rates and FFT time at the spec's size."""
    return {"status": "ok", **measure_rates(int(spec["size"]), int(spec.get("repeats", 3)))}
