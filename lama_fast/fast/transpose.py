"""LaMa's upsampling layers (transposed convolutions) as prepacked ordinary convolutions."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..ops.layout import interleave_phases_into, layout_ops_available, reflect_pad_border
from ..rewrite.run import CHANNELS_LAST, activate, to_channels_last
from .layers import WORKSPACE, PackedConv, _pair

# For LaMa's upsampling layers (ConvTranspose2d, 3x3, stride 2, padding 1, output
# padding 1) the output pixel (2m + a, 2n + b) sees input row m when a = 0 (kernel
# row 1), rows m and m + 1 when a = 1 (kernel rows 2 and 0); the same for columns.
# PHASE_TAPS[a] lists those kernel indices for input offsets 0, 1.
PHASE_TAPS = ((1,), (2, 0))
# Output bytes of one stripe of the phase convolutions.
PHASE_STRIPE_BYTES = 16 << 20


def phase_weights(weight: torch.Tensor, a: int, b: int) -> torch.Tensor:
    """The (Cout, Cin, 1 + a, 1 + b) convolution weight of output phase (a, b) of a LaMa upsampling layer.

    ``weight`` is the transposed convolution's (Cin, Cout, 3, 3) weight.
    """
    rows, cols = PHASE_TAPS[a], PHASE_TAPS[b]
    return torch.stack([torch.stack([weight[:, :, i, j].t() for j in cols], dim=-1) for i in rows], dim=-2)


class PackedConvTranspose:
    """A transposed convolution with folded BatchNorm and an optional ReLU.

    LaMa's stride-2 3x3 upsampling layers run as four ordinary convolutions, one
    per output phase, with 1x1, 1x2, 2x1 and 2x2 kernels (9 taps in all, as many
    as the transposed convolution has), each with prepacked oneDNN weights and
    its own zero padding, on stripes of input rows read in place; the phases are
    interleaved into the output in one pass (``interleave_phases_into``).  Other
    geometries use ``conv_transpose2d``.
    """

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], dtype: torch.dtype,
                 stride, padding, output_padding, dilation, activation: Optional[str]) -> None:
        self.dtype = dtype
        self.weight = weight.detach().to(dtype).contiguous()
        self.bias = None if bias is None else bias.detach().to(dtype).contiguous()
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.output_padding = _pair(output_padding)
        self.dilation = _pair(dilation)
        self.activation = activation
        self.out_channels = int(weight.shape[1])
        self.phases = None
        lama_geometry = (tuple(weight.shape[2:]) == (3, 3) and self.stride == (2, 2) and self.padding == (1, 1)
                         and self.output_padding == (1, 1) and self.dilation == (1, 1))
        if lama_geometry:
            exact = weight.detach().double()
            exact_bias = None if bias is None else bias.detach().double()
            # A two-tap axis is zero-padded by one on both sides by the convolution itself: its output
            # then starts one row (column) early, which interleave_phases_into skips.
            self.phases = [[PackedConv(phase_weights(exact, a, b), exact_bias, dtype, conv_padding=(a, b))
                            for b in range(2)] for a in range(2)]
            self.weight = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.phases is not None:
            return self._by_phases(to_channels_last(x.to(self.dtype)))
        out = F.conv_transpose2d(
            to_channels_last(x), self.weight, self.bias, self.stride, self.padding, self.output_padding,
            1, self.dilation,
        )
        return to_channels_last(activate(out, self.activation))

    def padded_output(self, x: torch.Tensor, padding) -> torch.Tensor:
        """``F.pad(self(x), padding, mode="reflect")``, the output written straight into the padded buffer's
        interior and the border reflected in place (no padded copy); LaMa's geometry, layout ops present."""
        x = to_channels_last(x.to(self.dtype))
        batch, _, height, width = x.shape
        left, right, top, bottom = padding
        shape = (batch, self.out_channels, 2 * height + top + bottom, 2 * width + left + right)
        padded = WORKSPACE.buffer(shape, self.dtype)
        if padded is None:
            padded = torch.empty(shape, dtype=self.dtype, memory_format=CHANNELS_LAST)
        self._by_phases(x, padded[:, :, top:top + 2 * height, left:left + 2 * width])
        return reflect_pad_border(padded, padding)

    def _by_phases(self, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The four phase convolutions, a stripe of input rows at a time (into ``out`` when given)."""
        batch, _, height, width = x.shape
        channels = self.out_channels
        shape = (batch, channels, 2 * height, 2 * width)
        if out is None:
            out = WORKSPACE.buffer(shape, self.dtype)
        if out is None:
            out = torch.empty(shape, dtype=self.dtype, memory_format=CHANNELS_LAST)
        # Stripes of about PHASE_STRIPE_BYTES of output: the padded input rows and the phase outputs of
        # one stripe are then cache-sized temporaries instead of whole-layer copies.
        row_bytes = 4 * channels * width * out.element_size()
        rows = max(8, PHASE_STRIPE_BYTES // max(1, row_bytes))
        for n in range(batch):
            for first in range(0, height, rows):
                last = min(height, first + rows)
                self._phase_rows(x[n:n + 1], first, last, out[n:n + 1, :, 2 * first:2 * last])
        return out

    def _phase_rows(self, x: torch.Tensor, first: int, last: int, target: torch.Tensor) -> None:
        """Output rows [2 first, 2 last) of one sample (the phases of input rows [first, last)) into ``target``."""
        height = x.shape[-2]
        # Rows first..last need one more input row below (zeros past the end: the convolution's padding).
        chunk = x[:, :, first:min(height, last + 1)]
        p00, p01, p10, p11 = (self.phases[a][b](chunk, None, self.activation) for a in range(2) for b in range(2))
        if layout_ops_available() and target.stride(1) == 1 and target.stride(3) == target.shape[1]:
            interleave_phases_into(p00, p01, p10, p11, target, 1, 1)
            return
        # (o, m, a, j, b) -> output (o, 2m + a, 2j + b)
        count, width = last - first, x.shape[-1]
        grid = target[0].unflatten(1, (count, 2)).unflatten(3, (width, 2))
        for a, b, phase in ((0, 0, p00), (0, 1, p01), (1, 0, p10), (1, 1, p11)):
            grid[:, :, a, :, b].copy_(phase[0, :, a:a + count, b:b + width])

    def output_rows(self, x: torch.Tensor, low: int, high: int) -> torch.Tensor:
        """Output rows [low, high) of one sample ``x`` (LaMa's upsampling geometry only)."""
        first, last = low // 2, (high + 1) // 2
        block = torch.empty((1, self.out_channels, 2 * (last - first), 2 * x.shape[-1]), dtype=self.dtype,
                            memory_format=CHANNELS_LAST)
        self._phase_rows(x, first, last, block)
        return block[:, :, low - 2 * first:high - 2 * first]
