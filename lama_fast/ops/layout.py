"""Layout ops of the fast CPU generator: ops lama_fast::reflect_pad_into, ::interleave_phases_into, ::reflect_pad_border.

Each moves an activation once, straight into the buffer its consumer reads:

* ``reflect_pad_into(x, out, padding)`` writes ``F.pad(x, padding, mode="reflect")``
  into ``out`` in one pass over its rows (ATen needs five ``copy_`` calls and two
  flips for the same, or a new tensor);
* ``interleave_phases_into(p00, p01, p10, p11, out, row0, col0)`` writes the four
  output phases of a stride-2 upsampling into ``out``:
  ``out[:, :, 2m + a, 2j + b] = p_ab[:, :, m + a * row0, j + b * col0]``
  (``row0``/``col0`` skip the leading row/column of a phase whose convolution
  zero-padded that axis on both sides); ``out`` may be a window of a channels-last
  tensor, such as the interior of a padded buffer;
* ``reflect_pad_border(out, padding)`` fills the border of ``out`` by reflecting
  its interior, in place: a layer that wrote its output into that interior hands
  the next convolution its padded input without a padded copy.

Both take channels-last tensors of any dtype (``csrc/cpu/layout.cpp``; schemas in
``csrc/cpu/module.cpp``); the float64 references are ``F.pad`` and strided slicing,
which the tests compare bit for bit.
"""

from __future__ import annotations

from typing import List, Sequence

import torch

from lama_fast._build import ops_reasons

OPS = ("reflect_pad_into", "interleave_phases_into", "reflect_pad_border")


def layout_reasons() -> List[str]:
    """Why the layout ops are not registered (empty when they are)."""
    return ops_reasons(OPS)


# Read once: the wrappers check it on every call.
_UNAVAILABLE = "; ".join(layout_reasons())


def layout_ops_available() -> bool:
    """Whether the layout ops are registered."""
    return not _UNAVAILABLE


def _require_extension() -> None:
    if _UNAVAILABLE:
        raise RuntimeError(f"the layout ops are unavailable: {_UNAVAILABLE}")


def reflect_pad_into(x: torch.Tensor, out: torch.Tensor, padding: Sequence[int]) -> torch.Tensor:
    """``out = F.pad(x, padding, mode="reflect")`` for channels-last ``x`` and ``out``; ``padding`` is
    (left, right, top, bottom), each smaller than the side it reflects. Returns ``out``."""
    _require_extension()
    left, right, top, bottom = (int(p) for p in padding)
    torch.ops.lama_fast.reflect_pad_into.default(x, out, left, right, top, bottom)
    return out


def interleave_phases_into(p00: torch.Tensor, p01: torch.Tensor, p10: torch.Tensor, p11: torch.Tensor,
                           out: torch.Tensor, row0: int = 0, col0: int = 0) -> torch.Tensor:
    """``out[:, :, 2m + a, 2j + b] = p_ab[:, :, m + a * row0, j + b * col0]`` for channels-last phases and a
    channels-last ``out`` (N, C, 2H, 2W). Returns ``out``."""
    _require_extension()
    torch.ops.lama_fast.interleave_phases_into.default(p00, p01, p10, p11, out, int(row0), int(col0))
    return out


def reflect_pad_border(out: torch.Tensor, padding: Sequence[int]) -> torch.Tensor:
    """Fill the border (left, right, top, bottom) of the channels-last ``out`` by reflecting its interior, in
    place: afterwards ``out`` equals ``F.pad(interior, padding, mode="reflect")``. Returns ``out``."""
    _require_extension()
    left, right, top, bottom = (int(p) for p in padding)
    torch.ops.lama_fast.reflect_pad_border.default(out, left, right, top, bottom)
    return out


if not _UNAVAILABLE:

    @torch.library.register_fake("lama_fast::reflect_pad_border")
    def _reflect_pad_border_fake(out, left, right, top, bottom) -> None:
        return None

    @torch.library.register_fake("lama_fast::reflect_pad_into")
    def _reflect_pad_into_fake(x, out, left, right, top, bottom) -> None:
        return None

    @torch.library.register_fake("lama_fast::interleave_phases_into")
    def _interleave_phases_into_fake(p00, p01, p10, p11, out, row0, col0) -> None:
        return None
