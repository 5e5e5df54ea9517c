"""Reference implementation of LaMa's fast-Fourier-convolution generator.

Module names, attribute names and parameter shapes follow the released
checkpoints exactly, so a released state dict loads with ``strict=True``.
Every module runs in float32 and float64.  Branches that a layer does not
have (for example the global half of a layer with ``ratio_gout == 0``) are
represented by ``None`` instead of a zero tensor.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn

Branches = Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]
FFT_NORMS = ("ortho", "forward", "backward")


def _split_input(x: Union[torch.Tensor, Branches]) -> Branches:
    """A plain tensor is an all-local input; a pair is (local, global)."""
    if isinstance(x, tuple):
        return x
    return x, None


def pointwise_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A bias-free 1x1 convolution computed as one channel GEMM.

    Same result as ``conv(x)`` up to rounding, but BLAS accumulates the
    channel sum more accurately in float32 than the direct-convolution path
    (about 2/3 of the error on the golden spectral case), at the same speed.
    """
    batch, channels, height, width = x.shape
    weight = conv.weight.view(conv.out_channels, channels)
    return torch.matmul(weight, x.reshape(batch, channels, height * width)).view(
        batch, conv.out_channels, height, width
    )


def _add(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


class FourierUnit(nn.Module):
    """rfft2 -> 1x1 conv over interleaved (real, imag) channels -> BN -> ReLU -> irfft2."""

    def __init__(self, in_channels: int, out_channels: int, fft_norm: str = "ortho") -> None:
        super().__init__()
        if fft_norm not in FFT_NORMS:
            raise ValueError(f"fft_norm must be one of {FFT_NORMS}, got {fft_norm!r}")
        self.conv_layer = nn.Conv2d(in_channels * 2, out_channels * 2, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels * 2)
        self.relu = nn.ReLU(inplace=True)
        self.fft_norm = fft_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        spectrum = torch.fft.rfftn(x, dim=(-2, -1), norm=self.fft_norm)
        # (N, C, H, Wf, 2) -> (N, C, 2, H, Wf): channel 2c is Re(c), 2c+1 is Im(c).
        interleaved = torch.view_as_real(spectrum).permute(0, 1, 4, 2, 3)
        interleaved = interleaved.reshape(batch, -1, height, spectrum.shape[-1])
        mixed = self.relu(self.bn(pointwise_conv(self.conv_layer, interleaved)))
        mixed = mixed.view(batch, -1, 2, height, spectrum.shape[-1])
        spectrum = torch.complex(mixed[:, :, 0], mixed[:, :, 1])
        return torch.fft.irfftn(spectrum, s=(height, width), dim=(-2, -1), norm=self.fft_norm)


class SpectralTransform(nn.Module):
    """The global-to-global branch: 1x1 conv+BN+ReLU, Fourier unit(s), residual, 1x1 conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        enable_lfu: bool = False,
        fft_norm: str = "ortho",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"SpectralTransform stride must be 1 or 2, got {stride}")
        hidden = out_channels // 2
        self.stride = stride
        self.enable_lfu = enable_lfu
        self.downsample = nn.AvgPool2d(kernel_size=2, stride=2) if stride == 2 else nn.Identity()
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.fu = FourierUnit(hidden, hidden, fft_norm=fft_norm)
        # The original builds the local Fourier unit without passing fft_norm on,
        # so it always uses "ortho" whatever the layer's setting.
        self.lfu = FourierUnit(hidden, hidden) if enable_lfu else None
        self.conv2 = nn.Conv2d(hidden, out_channels, kernel_size=1, bias=False)

    def _local_fourier(self, x: torch.Tensor) -> torch.Tensor:
        _, channels, height, width = x.shape
        # The original cuts both axes into tiles of height // 2 and stacks the
        # four tiles of the first quarter of the channels; that only lines up
        # for square maps with an even side and channels divisible by four.
        if height != width or height % 2 or channels % 4:
            raise ValueError(
                "the local Fourier unit (enable_lfu) needs a square feature map with an even "
                f"side and channels divisible by 4; got {channels} channels at {height}x{width}"
            )
        half = height // 2
        quarter = x[:, : channels // 4]
        tiles = torch.cat(torch.split(quarter, half, dim=-2), dim=1)
        tiles = torch.cat(torch.split(tiles, half, dim=-1), dim=1)
        return self.lfu(tiles).repeat(1, 1, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn, relu = self.conv1
        x = relu(bn(pointwise_conv(conv, self.downsample(x))))
        total = x + self.fu(x)
        if self.lfu is not None:
            total = total + self._local_fourier(x)
        return pointwise_conv(self.conv2, total)


class FFC(nn.Module):
    """Fast Fourier convolution: four branches between local and global channel groups."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_gin: float,
        ratio_gout: float,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = False,
        enable_lfu: bool = True,
        padding_type: str = "reflect",
        gated: bool = False,
        fft_norm: str = "ortho",
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"FFC stride must be 1 or 2, got {stride}")
        in_cg = int(in_channels * ratio_gin)
        in_cl = in_channels - in_cg
        out_cg = int(out_channels * ratio_gout)
        out_cl = out_channels - out_cg
        self.ratio_gin = ratio_gin
        self.ratio_gout = ratio_gout
        self.global_in_num = in_cg

        def conv(cin: int, cout: int) -> Optional[nn.Conv2d]:
            if cin == 0 or cout == 0:
                return None
            return nn.Conv2d(
                cin, cout, kernel_size, stride, padding, dilation, bias=bias, padding_mode=padding_type
            )

        self.convl2l = conv(in_cl, out_cl)
        self.convl2g = conv(in_cl, out_cg)
        self.convg2l = conv(in_cg, out_cl)
        self.convg2g = (
            SpectralTransform(in_cg, out_cg, stride, enable_lfu, fft_norm)
            if in_cg and out_cg
            else None
        )
        self.gated = gated
        if gated and (in_cg == 0 or out_cl == 0):
            raise ValueError(
                "gated=True needs both global input channels and local output channels "
                f"(ratio_gin={ratio_gin}, ratio_gout={ratio_gout})"
            )
        self.gate = nn.Conv2d(in_channels, 2, kernel_size=1) if gated else None

    def forward(self, x: Union[torch.Tensor, Branches]) -> Branches:
        x_l, x_g = _split_input(x)
        g2l_gate = l2g_gate = None
        if self.gate is not None:
            parts = [t for t in (x_l, x_g) if t is not None]
            gates = torch.sigmoid(self.gate(torch.cat(parts, dim=1)))
            g2l_gate, l2g_gate = gates.chunk(2, dim=1)

        def apply(conv: Optional[nn.Module], t: Optional[torch.Tensor], gate=None):
            if conv is None or t is None:
                return None
            y = conv(t)
            return y if gate is None else y * gate

        out_l = out_g = None
        if self.ratio_gout != 1:
            out_l = _add(apply(self.convl2l, x_l), apply(self.convg2l, x_g, g2l_gate))
        if self.ratio_gout != 0:
            out_g = _add(apply(self.convl2g, x_l, l2g_gate), apply(self.convg2g, x_g))
        return out_l, out_g


class FFC_BN_ACT(nn.Module):
    """An FFC followed by BatchNorm and an activation (ReLU if ``activation``) on each of its two outputs."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ratio_gin: float,
        ratio_gout: float,
        activation: bool = False,
        **ffc_options,
    ) -> None:
        super().__init__()
        self.ffc = FFC(in_channels, out_channels, kernel_size, ratio_gin, ratio_gout, **ffc_options)
        global_channels = int(out_channels * ratio_gout)
        # Which norms exist depends on the ratio itself, as in the released
        # layout (a layer with ratio_gout == 0 has no bn_g entry at all).
        self.bn_l = nn.BatchNorm2d(out_channels - global_channels) if ratio_gout != 1 else None
        self.bn_g = nn.BatchNorm2d(global_channels) if ratio_gout != 0 else None
        self.act_l = nn.ReLU(inplace=True) if activation and ratio_gout != 1 else None
        self.act_g = nn.ReLU(inplace=True) if activation and ratio_gout != 0 else None

    @staticmethod
    def _post(t: Optional[torch.Tensor], bn: Optional[nn.Module], act: Optional[nn.Module]):
        if t is None:
            return None
        if bn is not None:
            t = bn(t)
        if act is not None:
            t = act(t)
        return t

    def forward(self, x: Union[torch.Tensor, Branches]) -> Branches:
        x_l, x_g = self.ffc(x)
        return self._post(x_l, self.bn_l, self.act_l), self._post(x_g, self.bn_g, self.act_g)


class FFCResnetBlock(nn.Module):
    """Two FFC_BN_ACT layers with a residual connection on both branches."""

    def __init__(self, dim: int, padding_type: str = "reflect", dilation: int = 1, **conv_kwargs) -> None:
        super().__init__()
        layer = dict(kernel_size=3, padding=dilation, dilation=dilation, activation=True,
                     padding_type=padding_type, **conv_kwargs)
        self.conv1 = FFC_BN_ACT(dim, dim, **layer)
        self.conv2 = FFC_BN_ACT(dim, dim, **layer)

    def forward(self, x: Union[torch.Tensor, Branches]) -> Branches:
        id_l, id_g = _split_input(x)
        x_l, x_g = self.conv2(self.conv1((id_l, id_g)))
        return _add(id_l, x_l), _add(id_g, x_g)


class ConcatTupleLayer(nn.Module):
    """Joins the (local, global) pair back into one tensor, local channels first."""

    def forward(self, x: Union[torch.Tensor, Branches]) -> torch.Tensor:
        x_l, x_g = _split_input(x)
        if x_l is None or x_g is None:
            return x_l if x_g is None else x_g
        return torch.cat((x_l, x_g), dim=1)
