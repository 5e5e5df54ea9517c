"""Bit masks of positive activations for backward passes: ops lama_fast::relu_mask and ::apply_mask.

A fused op that ends in a ReLU needs, in its backward, only where its output
was positive. ``relu_mask(out)`` keeps that as one bit per element: a uint8
tensor (N, H, ceil(W * C / 8)) whose row (n, h) holds the bits of
``out[n, :, h, :]`` in channels-last order (element ``w * C + c`` is bit
``(w * C + c) % 8``, least significant first, of byte ``(w * C + c) // 8``),
1 where the element is > 0 (NaN gives 0). Every row is whole bytes, so the
mask of a band of rows is the same band of rows of the mask: masks made band
by band can be written into one larger mask by slicing.
``apply_mask(grad, bits)`` is the gradient through the ReLU: a new
channels-last tensor equal to ``grad`` where the bit is 1 and 0 elsewhere;
``grad`` itself is never written. Both take float32, float64 and bfloat16 in
any memory format (``csrc/cpu/masks.cpp``; schemas in ``csrc/cpu/module.cpp``).
The fake kernels below give meta tensors and ``torch.compile`` the shapes.
"""

from __future__ import annotations

from typing import List

import torch

from lama_fast._build import ops_reasons

OPS = ("relu_mask", "apply_mask")
DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def masks_reasons() -> List[str]:
    """Why the mask ops are not registered (empty when they are)."""
    return ops_reasons(OPS)


# Read once: the wrappers check it on every call, and torch.compile traces them.
_UNAVAILABLE = "; ".join(masks_reasons())


def _require_extension() -> None:
    if _UNAVAILABLE:
        raise RuntimeError(f"the mask ops are unavailable: {_UNAVAILABLE}")


def mask_shape(shape) -> tuple:
    """The shape (N, H, ceil(W * C / 8)) of the mask of an (N, C, H, W) tensor."""
    n, c, h, w = shape
    return (n, h, (w * c + 7) // 8)


def relu_mask(x: torch.Tensor) -> torch.Tensor:
    """Where x (N, C, H, W) is > 0, one bit per element: uint8 (N, H, ceil(W * C / 8)), rows in channels-last order."""
    _require_extension()
    return torch.ops.lama_fast.relu_mask.default(x)


def apply_mask(grad: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """A new channels-last copy of grad (N, C, H, W) with the elements whose bit in ``bits`` is 0 set to 0."""
    _require_extension()
    return torch.ops.lama_fast.apply_mask.default(grad, bits)


def _check_activation(op: str, name: str, t: torch.Tensor) -> None:
    torch._check(t.dim() == 4, lambda: f"{op}: expected {name} of shape (N, C, H, W), got {list(t.shape)}")
    torch._check(
        t.dtype in DTYPES,
        lambda: f"{op}: expected {name} of dtype float32, float64 or bfloat16, got {t.dtype}",
    )


if not _UNAVAILABLE:

    @torch.library.register_fake("lama_fast::relu_mask")
    def _relu_mask_fake(x: torch.Tensor) -> torch.Tensor:
        _check_activation("relu_mask", "x", x)
        return x.new_empty(mask_shape(x.shape), dtype=torch.uint8)

    @torch.library.register_fake("lama_fast::apply_mask")
    def _apply_mask_fake(grad: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        _check_activation("apply_mask", "grad", grad)
        torch._check(bits.dtype == torch.uint8, lambda: f"apply_mask: expected uint8 bits from relu_mask, got "
                                                        f"{bits.dtype}")
        expected = mask_shape(grad.shape)
        torch._check(
            tuple(bits.shape) == expected,
            lambda: f"apply_mask: bits of shape {list(bits.shape)} do not match grad of shape {list(grad.shape)} "
                    f"(expected {list(expected)})",
        )
        return torch.empty(grad.shape, dtype=grad.dtype, device=grad.device, memory_format=torch.channels_last)
