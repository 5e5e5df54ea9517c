"""Winograd F(4x4, 3x3) float32 3x3 convolution on the CPU: ops lama_fast::winograd_weight and ::conv3x3_winograd.

The convolution has stride 1 and no padding of its own: pad the input first
(LaMa pads with reflection). ``winograd_weight`` transforms a weight once;
``conv3x3_winograd`` then computes ``conv(x) + bias + other`` (then ReLU if
``relu``) and returns channels_last output (``csrc/cpu/winograd.cpp``; schemas
in ``csrc/cpu/module.cpp``). The fake kernels below give meta tensors and
``torch.compile`` the output's shape, dtype and memory format; the float64
reference is ``lama_fast.ops.reference.conv3x3_reference``.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from lama_fast._build import ops_reasons

OPS = ("winograd_weight", "conv3x3_winograd", "winograd_isa")


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

    With ``reflect_pad=1`` x is unpadded (N, Cin, H, W) and its reflect padding is read in place.
    """
    _require_extension()
    return torch.ops.lama_fast.conv3x3_winograd.default(x, packed_weight, bias, other, relu, reflect_pad)


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

    @torch.library.register_fake("lama_fast::conv3x3_winograd")
    def _conv3x3_winograd_fake(x, packed_weight, bias=None, other=None, relu=False, reflect_pad=0):
        torch._check(
            x.dim() == 4, lambda: f"conv3x3_winograd: expected x of shape (N, Cin, H+2, W+2), got {list(x.shape)}"
        )
        torch._check(reflect_pad in (0, 1), lambda: f"conv3x3_winograd: reflect_pad must be 0 or 1, got {reflect_pad}")
        torch._check(x.dtype == torch.float32, lambda: f"conv3x3_winograd: expected float32 x, got {x.dtype}")
        torch._check(
            packed_weight.dim() == 3 and packed_weight.shape[0] == 36,
            lambda: "conv3x3_winograd: expected a packed weight of shape (36, Cin, Cout) from winograd_weight",
        )
        torch._check(
            packed_weight.shape[1] == x.shape[1],
            lambda: f"conv3x3_winograd: x has {x.shape[1]} channels, the weight expects {packed_weight.shape[1]}",
        )
        n, _, hp, wp = x.shape
        shape = (n, packed_weight.shape[2], hp + 2 * reflect_pad - 2, wp + 2 * reflect_pad - 2)
        return torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)
