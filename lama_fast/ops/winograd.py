"""Winograd F(4x4, 3x3) float32 3x3 convolution on the CPU: ops lama_fast::winograd_weight and ::conv3x3_winograd.

The convolution has stride 1 and no padding of its own: pad the input first
(LaMa pads with reflection). ``winograd_weight`` transforms a weight once;
``conv3x3_winograd`` takes that packed weight, or the plain (Cout, Cin, 3, 3)
weight, which it transforms on each call into a reused buffer (a quarter of
the memory, for ~1 % of the convolution's time), and computes ``conv(x) + bias + other`` (then ReLU if
``relu``) and returns channels_last output (``csrc/cpu/winograd.cpp``; schemas
in ``csrc/cpu/module.cpp``). The fake kernels below give meta tensors and
``torch.compile`` the output's shape, dtype and memory format; the float64
reference is ``lama_fast.ops.reference.conv3x3_reference``.

``conv3x3_winograd`` is differentiable with respect to ``x``, ``bias`` and
``other`` (the weight is a frozen constant). Its backward keeps only the
output's ReLU mask (``lama_fast.ops.masks``) and computes the input gradient
with the same Winograd convolution: the zero-padded output gradient convolved
with the transposed, rotated kernels (``transposed_weight``: for a packed
weight ``winograd_weight_transpose(packed_weight)``, for a plain one the plain
transposed kernels), made once per weight tensor.
"""

from __future__ import annotations

import threading
import weakref
from typing import Dict, List, Optional, Tuple

import torch

from lama_fast._build import ops_reasons
from lama_fast.ops.masks import apply_mask, masks_reasons, relu_mask

OPS = ("winograd_weight", "conv3x3_winograd", "winograd_isa", "winograd_weight_transpose")
WEIGHT_GRAD_ERROR = ("conv3x3_winograd: gradients with respect to the weight are not supported; only x, bias and "
                     "other get gradients")


def winograd_ops_reasons() -> List[str]:
    """Why the Winograd ops are not registered (empty when they are, whatever kernels this CPU runs)."""
    return ops_reasons(OPS)


def winograd_reasons() -> List[str]:
    """Why the cpu backend does not use the Winograd 3x3 convolution here (empty when the ops are
    registered and this CPU runs their AVX2 or AVX-512 kernels)."""
    reasons = winograd_ops_reasons()
    if not reasons and winograd_isa() == "generic":
        # Measured: without AVX2 or AVX-512 kernels it runs at ~0.8x oneDNN's direct convolution.
        reasons.append("this CPU has neither AVX-512 nor AVX2, where the Winograd kernels are slower than oneDNN")
    return reasons


# Read once: the wrappers check it on every call, and torch.compile traces them.
_UNAVAILABLE = "; ".join(winograd_ops_reasons())
# The backward also needs the mask ops.
_NO_BACKWARD = "; ".join(masks_reasons())


def _require_extension() -> None:
    if _UNAVAILABLE:
        raise RuntimeError(f"the Winograd convolution is unavailable: {_UNAVAILABLE}")


def winograd_isa() -> str:
    """Which kernels conv3x3_winograd runs on this CPU: "avx512", "avx2" or "generic"."""
    _require_extension()
    return torch.ops.lama_fast.winograd_isa.default()


def winograd_weight(weight: torch.Tensor) -> torch.Tensor:
    """The float32 (Cout, Cin, 3, 3) weight transformed for conv3x3_winograd (an opaque (36, Cin, Cout) tensor)."""
    _require_extension()
    return torch.ops.lama_fast.winograd_weight.default(weight)


def conv3x3_winograd(x: torch.Tensor, packed_weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                     other: Optional[torch.Tensor] = None, relu: bool = False, reflect_pad: int = 0) -> torch.Tensor:
    """relu?(conv3x3(x) + bias + other) of a padded float32 x (N, Cin, H+2, W+2), as channels_last (N, Cout, H, W).

    ``packed_weight`` is ``winograd_weight(w)`` or the contiguous float32 weight ``w`` (Cout, Cin, 3, 3) itself.
    With ``reflect_pad=1`` x is unpadded (N, Cin, H, W) and its reflect padding is read in place.
    """
    _require_extension()
    return torch.ops.lama_fast.conv3x3_winograd.default(x, packed_weight, bias, other, relu, reflect_pad)


def winograd_weight_transpose(packed_weight: torch.Tensor) -> torch.Tensor:
    """For ``packed_weight = winograd_weight(w)``, ``winograd_weight(w.transpose(0, 1).flip(2, 3))`` (up to float32
    rounding), shape (36, Cout, Cin): the packed weight of the convolution that gives the input gradient.

    The kernels are recovered from the packed weight in double precision (the plain weight is not needed).
    """
    _require_extension()
    return torch.ops.lama_fast.winograd_weight_transpose.default(packed_weight)


# id(packed weight) -> (weak reference to it, its version counter, its transpose).
_TRANSPOSED: Dict[int, Tuple[weakref.ref, int, torch.Tensor]] = {}
# Reentrant: a weak reference's callback may run (garbage collection) while the lock is held.
_TRANSPOSED_LOCK = threading.RLock()


def _transpose(weight: torch.Tensor) -> torch.Tensor:
    if weight.dim() == 4:
        return weight.transpose(0, 1).flip(2, 3).contiguous()
    return winograd_weight_transpose(weight)


def transposed_weight(packed_weight: torch.Tensor) -> torch.Tensor:
    """The weight of the convolution that gives the input gradient: ``winograd_weight_transpose(packed_weight)``
    for a packed weight, ``w.transpose(0, 1).flip(2, 3)`` for a plain one; computed once per weight tensor and
    kept while that tensor lives (recomputed if it was modified in place outside ``torch.inference_mode``)."""
    key = id(packed_weight)
    # Inference tensors (made under torch.inference_mode) keep no version counter.
    version = -1 if packed_weight.is_inference() else packed_weight._version
    with _TRANSPOSED_LOCK:
        entry = _TRANSPOSED.get(key)
        if entry is not None and entry[0]() is packed_weight and entry[1] == version:
            return entry[2]
    value = _transpose(packed_weight)

    def forget(ref: weakref.ref) -> None:
        with _TRANSPOSED_LOCK:
            current = _TRANSPOSED.get(key)
            if current is not None and current[0] is ref:
                del _TRANSPOSED[key]

    with _TRANSPOSED_LOCK:
        _TRANSPOSED[key] = (weakref.ref(packed_weight, forget), version, value)
    return value


def clear_transposed_weights() -> None:
    """Drop every transposed weight that ``transposed_weight`` keeps."""
    with _TRANSPOSED_LOCK:
        _TRANSPOSED.clear()


def _fold_reflect_padding(padded_grad: torch.Tensor) -> torch.Tensor:
    """The gradient of x (N, C, H, W) from that of its reflect padding by one pixel, ``padded_grad``
    (N, C, H+2, W+2), which is overwritten: the adjoint of ``F.pad(x, (1, 1, 1, 1), mode="reflect")``.

    Padded row 0 is x's row 1 and padded row H+1 is x's row H-2, and so for columns; the rows are folded
    over the whole width first, so that the corners reach x through both.
    """
    h, w = padded_grad.shape[2] - 2, padded_grad.shape[3] - 2
    g = padded_grad
    g[:, :, 2].add_(g[:, :, 0])  # padded row 2 is x's row 1
    g[:, :, h - 1].add_(g[:, :, h + 1])  # padded row H-1 is x's row H-2
    g[:, :, :, 2].add_(g[:, :, :, 0])
    g[:, :, :, w - 1].add_(g[:, :, :, w + 1])
    return g[:, :, 1:h + 1, 1:w + 1].contiguous(memory_format=torch.channels_last)


def conv3x3_winograd_input_grad(grad_out: torch.Tensor, packed_weight: torch.Tensor,
                                reflect_pad: int = 0) -> torch.Tensor:
    """The gradient of ``conv3x3_winograd``'s x for the gradient ``grad_out`` (N, Cout, H, W) of its convolution
    (after the ReLU's mask), channels_last: (N, Cin, H+2, W+2), or (N, Cin, H, W) with ``reflect_pad=1``."""
    n, cout, h, w = grad_out.shape
    padded = torch.empty((n, cout, h + 4, w + 4), dtype=grad_out.dtype, device=grad_out.device,
                         memory_format=torch.channels_last)
    padded[:, :, :2].zero_()
    padded[:, :, h + 2:].zero_()
    padded[:, :, 2:h + 2, :2].zero_()
    padded[:, :, 2:h + 2, w + 2:].zero_()
    padded[:, :, 2:h + 2, 2:w + 2] = grad_out
    grad_padded = conv3x3_winograd(padded, transposed_weight(packed_weight))
    return _fold_reflect_padding(grad_padded) if reflect_pad else grad_padded


def _conv3x3_winograd_setup_context(ctx, inputs, output) -> None:
    _, packed_weight, _, _, relu, reflect_pad = inputs
    if packed_weight.requires_grad:
        raise RuntimeError(WEIGHT_GRAD_ERROR)
    ctx.packed_weight = packed_weight
    ctx.relu = relu
    ctx.reflect_pad = reflect_pad
    if relu:
        ctx.save_for_backward(relu_mask(output))


def _conv3x3_winograd_backward(ctx, grad):
    # The dispatcher drops trailing arguments left at their defaults (bias=None, ...): one gradient per
    # argument passed.
    passed = len(ctx.needs_input_grad)
    needs_x, _, needs_bias, needs_other = (tuple(ctx.needs_input_grad) + (False,) * 4)[:4]
    grad = apply_mask(grad, ctx.saved_tensors[0]) if ctx.relu else grad
    grad_x = grad_bias = grad_other = None
    if needs_x:
        grad_x = conv3x3_winograd_input_grad(grad, ctx.packed_weight, ctx.reflect_pad)
    if needs_bias:
        grad_bias = grad.sum((0, 2, 3))
    if needs_other:
        grad_other = grad
    return (grad_x, None, grad_bias, grad_other, None, None)[:passed]


if not _UNAVAILABLE:

    @torch.library.register_fake("lama_fast::winograd_weight")
    def _winograd_weight_fake(weight: torch.Tensor) -> torch.Tensor:
        torch._check(
            weight.dim() == 4 and weight.shape[2] == 3 and weight.shape[3] == 3,
            lambda: f"winograd_weight: expected a weight of shape (Cout, Cin, 3, 3), got {list(weight.shape)}",
        )
        torch._check(
            weight.dtype == torch.float32, lambda: f"winograd_weight: expected a float32 weight, got {weight.dtype}"
        )
        return weight.new_empty((36, weight.shape[1], weight.shape[0]))

    @torch.library.register_fake("lama_fast::winograd_weight_transpose")
    def _winograd_weight_transpose_fake(packed_weight: torch.Tensor) -> torch.Tensor:
        torch._check(
            packed_weight.dim() == 3 and packed_weight.shape[0] == 36,
            lambda: "winograd_weight_transpose: expected a packed weight of shape (36, Cin, Cout) from "
                    f"winograd_weight, got {list(packed_weight.shape)}",
        )
        torch._check(
            packed_weight.dtype == torch.float32,
            lambda: f"winograd_weight_transpose: expected a float32 packed weight, got {packed_weight.dtype}",
        )
        return packed_weight.new_empty((36, packed_weight.shape[2], packed_weight.shape[1]))

    @torch.library.register_fake("lama_fast::conv3x3_winograd")
    def _conv3x3_winograd_fake(x, packed_weight, bias=None, other=None, relu=False, reflect_pad=0):
        torch._check(
            x.dim() == 4, lambda: f"conv3x3_winograd: expected x of shape (N, Cin, H+2, W+2), got {list(x.shape)}"
        )
        torch._check(reflect_pad in (0, 1), lambda: f"conv3x3_winograd: reflect_pad must be 0 or 1, got {reflect_pad}")
        torch._check(x.dtype == torch.float32, lambda: f"conv3x3_winograd: expected float32 x, got {x.dtype}")
        plain = packed_weight.dim() == 4
        torch._check(
            (plain and tuple(packed_weight.shape[2:]) == (3, 3))
            or (packed_weight.dim() == 3 and packed_weight.shape[0] == 36),
            lambda: "conv3x3_winograd: expected a weight of shape (Cout, Cin, 3, 3) or a packed weight of shape "
                    f"(36, Cin, Cout) from winograd_weight, got {list(packed_weight.shape)}",
        )
        torch._check(
            packed_weight.shape[1] == x.shape[1],
            lambda: f"conv3x3_winograd: x has {x.shape[1]} channels, the weight expects {packed_weight.shape[1]}",
        )
        n, _, hp, wp = x.shape
        cout = packed_weight.shape[0] if plain else packed_weight.shape[2]
        shape = (n, cout, hp + 2 * reflect_pad - 2, wp + 2 * reflect_pad - 2)
        return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)

    if not _NO_BACKWARD:
        torch.library.register_autograd(
            "lama_fast::conv3x3_winograd", _conv3x3_winograd_backward, setup_context=_conv3x3_winograd_setup_context
        )
