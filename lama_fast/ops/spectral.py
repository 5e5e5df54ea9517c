"""LaMa's SpectralTransform and FourierUnit as single compiled CPU ops.

``torch.ops.lama_fast.spectral_transform`` and ``torch.ops.lama_fast.fourier_unit``
(schemas in ``csrc/cpu/module.cpp``; CPU ``csrc/cpu/spectral.cpp``, CUDA
``csrc/cuda/spectral_cuda.cpp``) take the layers' weights with BatchNorm
already folded in, accept NCHW or channels_last input, and return
channels_last output. Their fake kernels below give meta tensors and
``torch.compile`` the output's shape, dtype and memory format; their float64
references are in ``lama_fast.ops.reference``.

Gradients (CPU, float32 and float64): when grad mode is on and x (or bias,
other) requires grad, the wrappers run ``spectral_transform_masked`` /
``fourier_unit_masked`` instead, which also return the ReLU masks (one bit
per element) that ``spectral_transform_backward`` / ``fourier_unit_backward``
need; their autograd formulas, registered below, give gradients for x, bias
and other. The weights are constants: asking for their gradients is an error.

``spectral_transform_into`` (CPU, no autograd) writes the same output into
``other`` itself: the fast generator's FFC layers accumulate the spectral
branch onto the new output of their l2g convolution instead of copying it.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from lama_fast._build import extension_reasons, ops_reasons

FFT_NORMS = ("ortho", "forward", "backward")
DTYPES = (torch.float32, torch.float64, torch.bfloat16)
OPS = ("spectral_transform", "fourier_unit", "spectral_transform_into")
CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def spectral_reasons() -> List[str]:
    """Why the CPU spectral ops are not registered (empty when they are)."""
    return ops_reasons(OPS)


# Read once: the wrappers check it on every call, and torch.compile traces them.
_UNAVAILABLE = "; ".join(extension_reasons())


def _require_extension() -> None:
    if _UNAVAILABLE:
        raise RuntimeError(f"the compiled op is unavailable: {_UNAVAILABLE}")


def _needs_grad(op: str, x: torch.Tensor, *tensors: Optional[torch.Tensor]) -> bool:
    """Whether the op must record its backward: grad mode is on and x or one of ``tensors`` requires grad."""
    if not torch.is_grad_enabled() or not any(t is not None and t.requires_grad for t in (x, *tensors)):
        return False
    if x.device.type != "cpu":
        raise RuntimeError(f"{op}: the backward runs on the CPU only, got x on {x.device}; "
                           "run under torch.no_grad() or move the tensors to the CPU")
    return True


def spectral_transform(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w_freq: torch.Tensor,
                       b_freq: torch.Tensor, w2: torch.Tensor, bias: Optional[torch.Tensor] = None,
                       other: Optional[torch.Tensor] = None, relu: bool = False,
                       fft_norm: str = "ortho") -> torch.Tensor:
    """conv1x1(y + FourierUnit(y), w2) + bias + other (ReLU if relu), y = relu(conv1x1(x, w1) + b1); channels_last."""
    _require_extension()
    if _needs_grad("spectral_transform", x, bias, other):
        out, _ = torch.ops.lama_fast.spectral_transform_masked.default(x, w1, b1, w_freq, b_freq, w2, bias, other,
                                                                       relu, fft_norm)
        return out
    return torch.ops.lama_fast.spectral_transform.default(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm)


def spectral_transform_into(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w_freq: torch.Tensor,
                            b_freq: torch.Tensor, w2: torch.Tensor, bias: Optional[torch.Tensor], other: torch.Tensor,
                            relu: bool = False, fft_norm: str = "ortho") -> torch.Tensor:
    """``spectral_transform(x, ..., bias, other, relu)`` written into ``other`` itself (a CPU, channels-last
    contiguous tensor of the output's shape and x's dtype), which is returned: the output is accumulated onto
    ``other`` instead of a copy of it. No autograd: for tensors that do not require grad."""
    _require_extension()
    if _needs_grad("spectral_transform_into", x, bias, other):
        raise RuntimeError("spectral_transform_into: no gradient is recorded; use spectral_transform for tensors "
                           "that require grad")
    torch.ops.lama_fast.spectral_transform_into.default(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm)
    return other


def fourier_unit(x: torch.Tensor, w_freq: torch.Tensor, b_freq: torch.Tensor, fft_norm: str = "ortho") -> torch.Tensor:
    """irfft2(relu(conv1x1(rfft2(x) as interleaved (re, im) channels, w_freq) + b_freq)); channels_last."""
    _require_extension()
    if _needs_grad("fourier_unit", x):
        out, _ = torch.ops.lama_fast.fourier_unit_masked.default(x, w_freq, b_freq, fft_norm)
        return out
    return torch.ops.lama_fast.fourier_unit.default(x, w_freq, b_freq, fft_norm)


def mask_bytes(n: int, channels: int, cout: int, height: int, width: int, relu: bool, fourier_only: bool) -> int:
    """The size in bytes of the masks of ``spectral_transform_masked`` (``fourier_only``: ``fourier_unit_masked``)
    for x (n, Cin, height, width), Ch = ``channels``, Cout = ``cout``: whole bytes per row of the ReLU bits
    [y > 0] (n * height rows of width * Ch), [Z > 0] (n * (width // 2 + 1) columns of height * 2 * Ch) and,
    with ``relu``, [out > 0] (n * height rows of width * Cout); see ``csrc/cpu/spectral_masks.h``."""
    z = n * (width // 2 + 1) * ((height * 2 * channels + 7) // 8)
    if fourier_only:
        return z
    rows = n * height
    y = rows * ((width * channels + 7) // 8)
    out = rows * ((width * cout + 7) // 8) if relu else 0
    return y + z + out


def _check_fake_inputs(op: str, x: torch.Tensor, tensors: dict, fft_norm: str) -> None:
    torch._check(x.dim() == 4, lambda: f"{op}: x must be a 4-D (N, C, H, W) tensor, got shape {list(x.shape)}")
    if x.device.type == "cuda":
        torch._check(
            x.dtype in CUDA_DTYPES,
            lambda: f"{op}: x must have dtype torch.float32, torch.float64, torch.float16 or torch.bfloat16, "
                    f"got {x.dtype}",
        )
    else:
        torch._check(
            x.dtype in DTYPES,
            lambda: f"{op}: x must have dtype torch.float32, torch.float64 or torch.bfloat16, got {x.dtype}",
        )
    for name, t in tensors.items():
        if t is not None:
            torch._check(
                t.dtype == x.dtype, lambda: f"{op}: {name} must have the dtype of x ({x.dtype}), got {t.dtype}"
            )
    torch._check(
        fft_norm in FFT_NORMS,
        lambda: f'{op}: fft_norm must be "ortho", "forward" or "backward", got "{fft_norm}"',
    )


def channels_last_output(x: torch.Tensor, channels: int) -> torch.Tensor:
    """A new (N, channels, H, W) channels_last tensor like x (N, C, H, W): what the ops return."""
    n, _, h, w = x.shape
    return torch.empty((n, channels, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


if not _UNAVAILABLE:

    @torch.library.register_fake("lama_fast::spectral_transform_into")
    def _spectral_transform_into_fake(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm) -> None:
        _check_fake_inputs("spectral_transform_into", x, {"bias": bias, "other": other}, fft_norm)
        return None

    @torch.library.register_fake("lama_fast::spectral_transform")
    def _spectral_transform_fake(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm):
        op = "spectral_transform"
        tensors = dict(w1=w1, b1=b1, w_freq=w_freq, b_freq=b_freq, w2=w2, bias=bias, other=other)
        _check_fake_inputs(op, x, tensors, fft_norm)
        ch = w1.shape[0]
        cout = w2.shape[0]
        torch._check(
            w1.dim() == 2 and w1.shape[1] == x.shape[1],
            lambda: f"{op}: w1 must be (Ch, Cin) with Cin = {x.shape[1]}, got {list(w1.shape)}",
        )
        torch._check(
            tuple(w_freq.shape) == (2 * ch, 2 * ch),
            lambda: f"{op}: w_freq must be (2*Ch, 2*Ch) with Ch = {ch}, got {list(w_freq.shape)}",
        )
        torch._check(
            w2.dim() == 2 and w2.shape[1] == ch,
            lambda: f"{op}: w2 must be (Cout, Ch) with Ch = {ch}, got {list(w2.shape)}",
        )
        return channels_last_output(x, cout)

    @torch.library.register_fake("lama_fast::fourier_unit")
    def _fourier_unit_fake(x, w_freq, b_freq, fft_norm):
        op = "fourier_unit"
        _check_fake_inputs(op, x, dict(w_freq=w_freq, b_freq=b_freq), fft_norm)
        c = x.shape[1]
        torch._check(
            tuple(w_freq.shape) == (2 * c, 2 * c),
            lambda: f"{op}: w_freq must be (2*C, 2*C) with C = {c}, got {list(w_freq.shape)}",
        )
        return channels_last_output(x, c)

    @torch.library.register_fake("lama_fast::spectral_transform_masked")
    def _spectral_transform_masked_fake(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm):
        out = _spectral_transform_fake(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm)
        n, _, h, w = x.shape
        size = mask_bytes(n, w1.shape[0], w2.shape[0], h, w, relu, False)
        return out, torch.empty((size,), dtype=torch.uint8, device=x.device)

    @torch.library.register_fake("lama_fast::fourier_unit_masked")
    def _fourier_unit_masked_fake(x, w_freq, b_freq, fft_norm):
        out = _fourier_unit_fake(x, w_freq, b_freq, fft_norm)
        n, c, h, w = x.shape
        return out, torch.empty((mask_bytes(n, c, c, h, w, False, True),), dtype=torch.uint8, device=x.device)

    @torch.library.register_fake("lama_fast::spectral_transform_backward")
    def _spectral_transform_backward_fake(grad, masks, w1, w_freq, w2, relu, fft_norm):
        torch._check(grad.dim() == 4, lambda: f"spectral_transform_backward: grad must be a 4-D (N, C, H, W) "
                                              f"tensor, got shape {list(grad.shape)}")
        return channels_last_output(grad, w1.shape[1]), channels_last_output(grad, grad.shape[1])

    @torch.library.register_fake("lama_fast::fourier_unit_backward")
    def _fourier_unit_backward_fake(grad, masks, w_freq, fft_norm):
        torch._check(grad.dim() == 4, lambda: f"fourier_unit_backward: grad must be a 4-D (N, C, H, W) "
                                              f"tensor, got shape {list(grad.shape)}")
        return channels_last_output(grad, grad.shape[1])

    def _no_weight_grads(op: str, allowed: str, *weights: torch.Tensor) -> None:
        """Refuse, in one line, weights that require grad: the backward gives no gradients for them."""
        for t in weights:
            if t.requires_grad:
                raise RuntimeError(f"{op}: gradients with respect to the weights are not supported; {allowed}")

    def _spectral_transform_setup(ctx, inputs, output):
        x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm = inputs
        _no_weight_grads("spectral_transform", "only x, bias and other get gradients", w1, b1, w_freq, b_freq, w2)
        ctx.save_for_backward(output[1], w1, w_freq, w2)
        ctx.relu, ctx.fft_norm = relu, fft_norm

    def _spectral_transform_backward(ctx, grad_out, _grad_masks):
        masks, w1, w_freq, w2 = ctx.saved_tensors
        grad_x, grad_masked = torch.ops.lama_fast.spectral_transform_backward.default(
            grad_out, masks, w1, w_freq, w2, ctx.relu, ctx.fft_norm)
        need = ctx.needs_input_grad
        grad_bias = grad_masked.sum(dim=(0, 2, 3)) if need[6] else None
        grad_other = grad_masked if need[7] else None
        return grad_x if need[0] else None, None, None, None, None, None, grad_bias, grad_other, None, None

    torch.library.register_autograd("lama_fast::spectral_transform_masked", _spectral_transform_backward,
                                    setup_context=_spectral_transform_setup)

    def _fourier_unit_setup(ctx, inputs, output):
        x, w_freq, b_freq, fft_norm = inputs
        _no_weight_grads("fourier_unit", "only x gets gradients", w_freq, b_freq)
        ctx.save_for_backward(output[1], w_freq)
        ctx.fft_norm = fft_norm

    def _fourier_unit_backward(ctx, grad_out, _grad_masks):
        masks, w_freq = ctx.saved_tensors
        grad_x = torch.ops.lama_fast.fourier_unit_backward.default(grad_out, masks, w_freq, ctx.fft_norm)
        return grad_x, None, None, None

    torch.library.register_autograd("lama_fast::fourier_unit_masked", _fourier_unit_backward,
                                    setup_context=_fourier_unit_setup)
