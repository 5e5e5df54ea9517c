"""Rewrite a LaMa generator into the fast CPU generator.

Works on lama_fast's reference generator and on one built by the original
``saicinpainting`` code: both keep the layers in ``generator.model`` (an
``nn.Sequential``) under the same names; the original uses ``nn.Identity``
where ours has ``None`` for a missing branch, norm or activation.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

from . import layers
from .fold import UnsupportedModelError, batchnorm_scale_shift, fold_batchnorm
from .layers import (
    FastFFC,
    activate,
    FusedSpectral,
    PackedConv,
    PackedConvTranspose,
    add_branches,
    concat_branches,
    to_channels_last,
)


def _is_absent(module: Optional[nn.Module]) -> bool:
    return module is None or isinstance(module, nn.Identity)


def _activation_name(module: Optional[nn.Module], where: str) -> Optional[str]:
    if _is_absent(module):
        return None
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    if isinstance(module, nn.Tanh):
        return "tanh"
    raise UnsupportedModelError(f"{where}: activation {type(module).__name__} is not supported (ReLU only)")


def _conv_geometry(conv: nn.Conv2d, where: str) -> dict:
    if conv.groups != 1:
        raise UnsupportedModelError(f"{where}: grouped convolutions (groups={conv.groups}) are not supported")
    if isinstance(conv.padding, str):
        raise UnsupportedModelError(f"{where}: string padding {conv.padding!r} is not supported")
    return dict(stride=conv.stride, padding=conv.padding, dilation=conv.dilation, padding_mode=conv.padding_mode)


def _conv_with(conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor], dtype: torch.dtype,
               where: str, algorithm: str = "direct") -> PackedConv:
    return PackedConv(weight, bias, dtype, algorithm=algorithm, **_conv_geometry(conv, where))


def fuse_spectral(st: nn.Module, scale_g: Optional[torch.Tensor], dtype: torch.dtype,
                  where: str = "spectral transform") -> FusedSpectral:
    """The fused op's weights for a SpectralTransform whose output is scaled by ``scale_g`` (BN_g; None: 1)."""
    if getattr(st, "enable_lfu", False) or not _is_absent(getattr(st, "lfu", None)):
        raise UnsupportedModelError(f"{where}: the local Fourier unit (enable_lfu=True) is not fused")
    stride = getattr(st, "stride", 1)
    if stride not in (1, 2):
        raise UnsupportedModelError(f"{where}: spectral stride {stride} is not supported")
    conv1, bn1, relu1 = st.conv1[0], st.conv1[1], st.conv1[2]
    if not isinstance(relu1, nn.ReLU) or conv1.kernel_size != (1, 1) or conv1.groups != 1:
        raise UnsupportedModelError(f"{where}: conv1 is not a 1x1 conv + BN + ReLU")
    fu = st.fu
    for flag in ("use_se", "spectral_pos_encoding", "ffc3d"):
        if getattr(fu, flag, False):
            raise UnsupportedModelError(f"{where}: the Fourier unit option {flag} is not supported")
    if getattr(fu, "spatial_scale_factor", None) is not None:
        raise UnsupportedModelError(f"{where}: the Fourier unit option spatial_scale_factor is not supported")
    if fu.conv_layer.groups != 1 or fu.conv_layer.bias is not None:
        raise UnsupportedModelError(f"{where}: the Fourier unit's conv must be ungrouped and bias-free")
    hidden = conv1.out_channels
    scale1, shift1 = batchnorm_scale_shift(bn1, hidden)
    w1, b1 = fold_batchnorm(conv1.weight.flatten(1), conv1.bias, scale1, shift1)
    channels2 = fu.conv_layer.out_channels
    scale_f, shift_f = batchnorm_scale_shift(fu.bn, channels2)
    w_freq, b_freq = fold_batchnorm(fu.conv_layer.weight.flatten(1), None, scale_f, shift_f)
    if st.conv2.bias is not None:
        raise UnsupportedModelError(f"{where}: conv2 with a bias is not supported")
    w2 = st.conv2.weight.detach().double().flatten(1)
    if scale_g is not None:
        w2 = w2 * scale_g.view(-1, 1)
    return FusedSpectral(w1, b1, w_freq, b_freq, w2, getattr(fu, "fft_norm", "ortho"), dtype, stride == 2)


def convert_ffc_layer(layer: nn.Module, dtype: torch.dtype, where: str, conv_algorithm: str = "auto") -> FastFFC:
    """An FFC_BN_ACT (ours or the original's) as a FastFFC with its BatchNorms folded.

    ``conv_algorithm`` applies to the stride-1 3x3 convolutions between the
    branches: "auto" takes the Winograd kernels where they are usable (float32,
    AVX2/AVX-512), "direct" always oneDNN's direct convolution.
    """
    ffc = layer.ffc
    if getattr(ffc, "gated", False):
        raise UnsupportedModelError(f"{where}: gated FFC layers are not supported")
    l2l, l2g, g2l, g2g = (None if _is_absent(m) else m for m in (ffc.convl2l, ffc.convl2g, ffc.convg2l, ffc.convg2g))
    for name, conv in (("convl2l", l2l), ("convl2g", l2g), ("convg2l", g2l)):
        if conv is not None and not isinstance(conv, nn.Conv2d):
            raise UnsupportedModelError(f"{where}.{name}: {type(conv).__name__} is not supported")
    local_convs = [c for c in (l2l, g2l) if c is not None]
    global_convs = [c for c in (l2g,) if c is not None]
    out_cl = local_convs[0].out_channels if local_convs else 0
    if g2g is not None:
        out_cg = g2g.conv2.out_channels
    else:
        out_cg = global_convs[0].out_channels if global_convs else 0
    act_l = _activation_name(getattr(layer, "act_l", None), where + ".act_l") if out_cl else None
    act_g = _activation_name(getattr(layer, "act_g", None), where + ".act_g") if out_cg else None
    if g2g is not None and act_g not in (None, "relu"):
        raise UnsupportedModelError(f"{where}: activation {act_g} after a spectral branch is not supported")
    scale_l, shift_l = batchnorm_scale_shift(getattr(layer, "bn_l", None), out_cl) if out_cl else (None, None)
    scale_g, shift_g = batchnorm_scale_shift(getattr(layer, "bn_g", None), out_cg) if out_cg else (None, None)

    def folded(conv: Optional[nn.Conv2d], scale, shift, with_shift: bool):
        if conv is None:
            return None, None
        weight, bias = fold_batchnorm(conv.weight, conv.bias, scale, shift)
        if not with_shift:
            # The shift is added once per output, by the first convolution that carries it.
            bias = None if conv.bias is None else conv.bias.detach().double() * scale
        return weight, bias

    # Merge the two convolutions of the local input when there is no global input.
    if g2l is None and g2g is None and l2l is not None and l2g is not None and act_l == act_g:
        w_l, b_l = folded(l2l, scale_l, shift_l, True)
        w_g, b_g = folded(l2g, scale_g, shift_g, True)
        merged = _conv_with(l2l, torch.cat((w_l, w_g)), torch.cat((b_l, b_g)), dtype, where)
        return FastFFC(None, None, None, None, merged, None, act_l, act_g, split=out_cl)

    pl2l = pg2l = pl2g = None
    if l2l is not None:
        w, b = folded(l2l, scale_l, shift_l, True)
        pl2l = _conv_with(l2l, w, b, dtype, where + ".convl2l", conv_algorithm)
    if g2l is not None:
        w, b = folded(g2l, scale_l, shift_l, l2l is None)
        pg2l = _conv_with(g2l, w, b, dtype, where + ".convg2l", conv_algorithm)
    if l2g is not None:
        w, b = folded(l2g, scale_g, shift_g, True)
        pl2g = _conv_with(l2g, w, b, dtype, where + ".convl2g", conv_algorithm)
    spectral = None
    bias_g = None
    if g2g is not None:
        spectral = fuse_spectral(g2g, scale_g, dtype, where + ".convg2g")
        if l2g is None:
            bias_g = shift_g.to(dtype)
    return FastFFC(pl2l, pg2l, pl2g, spectral, None, bias_g, act_l, act_g, split=out_cl)


class _Pad:
    def __init__(self, module: nn.Module) -> None:
        padding = module.padding
        self.padding = (padding,) * 4 if isinstance(padding, int) else tuple(int(p) for p in padding)
        self.mode = "reflect" if isinstance(module, nn.ReflectionPad2d) else (
            "replicate" if isinstance(module, nn.ReplicationPad2d) else "constant")

    def __call__(self, x):
        if isinstance(x, tuple):
            raise UnsupportedModelError("a padding layer between FFC layers is not supported")
        return to_channels_last(torch.nn.functional.pad(x, self.padding, mode=self.mode))


class _Layer:
    def __init__(self, ffc: FastFFC) -> None:
        self.ffc = ffc

    def __call__(self, x):
        if not isinstance(x, tuple):
            x = (x, None)
        return self.ffc(x)


class _ResBlock:
    def __init__(self, first: FastFFC, second: FastFFC) -> None:
        self.first, self.second = first, second

    def __call__(self, x):
        if not isinstance(x, tuple):
            x = (x, None)
        return add_branches(x, self.second(self.first(x)))


class _Concat:
    def __call__(self, x):
        return concat_branches(x) if isinstance(x, tuple) else x


class _Conv:
    def __init__(self, conv: PackedConv, activation: Optional[str]) -> None:
        self.conv, self.activation = conv, activation

    def __call__(self, x):
        return self.conv.run(x, self.activation)


def _padless_conv(stage) -> Optional[PackedConv]:
    """The convolution of a plain convolution stage or a single-convolution FFC layer, when it pads nothing."""
    conv = stage.conv if isinstance(stage, _Conv) else _single_conv(stage)
    if conv is None or conv.explicit_padding is not None or conv.conv_padding != [0, 0] or conv.winograd is not None:
        return None
    return conv


def _single_conv(stage) -> Optional[PackedConv]:
    """The one convolution of an FFC layer that has only a local-to-local branch, else None."""
    if not isinstance(stage, _Layer):
        return None
    ffc = stage.ffc
    if ffc.merged is None and ffc.l2l is not None and ffc.g2l is None and ffc.l2g is None and ffc.spectral is None:
        return ffc.l2l
    return None


class _StripedPair:
    """Two layers in a row run stripe by stripe on large images.

    At 2048x2048 the 64-channel full-resolution tensor between the first two
    layers (and between the last two) takes 1 GB; here only the rows the second
    layer's current stripe needs are computed.  Small images run the two
    layers one after the other as usual.
    """

    def __init__(self, first, second_stage, second: _Conv, first_size, first_rows, first_bytes,
                 wrap_tuple: bool) -> None:
        self.first, self.second_stage, self.second = first, second_stage, second
        self.first_size, self.first_rows, self.first_bytes = first_size, first_rows, first_bytes
        self.wrap_tuple = wrap_tuple

    def __call__(self, x):
        x_in = x[0] if isinstance(x, tuple) else x
        if isinstance(x, tuple) and x[1] is not None:
            raise UnsupportedModelError("a striped pair of layers takes a local input only")
        conv = self.second.conv
        batch, _, height, width = x_in.shape
        mid_h, mid_w = self.first_size(height, width)
        if self.first_bytes(batch, mid_h, mid_w) <= layers.STRIPE_ABOVE_BYTES:
            return self.second_stage(self.first(x))
        out_h, out_w = conv.output_size(mid_h, mid_w)
        out = torch.empty((batch, conv.out_channels, out_h, out_w), dtype=conv.dtype,
                          memory_format=torch.channels_last)
        row_bytes = conv.in_channels * mid_w * out.element_size() * conv.stride[0]
        rows = max(8, layers.STRIPE_BYTES // max(1, row_bytes))
        for n in range(batch):
            sample = x_in[n:n + 1]

            def middle(low, high, sample=sample):
                return self.first_rows(sample, height, low, high).to(conv.dtype)

            for first in range(0, out_h, rows):
                last = min(out_h, first + rows)
                out[n:n + 1, :, first:last].copy_(conv.output_rows(middle, mid_h, first, last, self.second.activation))
        return (out, None) if self.wrap_tuple else out


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _pair_up(stages: List) -> List:
    """Fold a padding stage into the single convolution after it, and pair the layers
    around the full-resolution tensors (see _StripedPair)."""
    folded: List = []
    for stage in stages:
        # A reflect/replicate pad just before an unpadded convolution becomes that
        # convolution's own padding, so a large input is padded stripe by stripe.
        conv = _padless_conv(stage)
        if conv is not None and folded and isinstance(folded[-1], _Pad) and folded[-1].mode != "constant":
            conv.explicit_padding = folded[-1].padding
            conv.padding_mode = folded.pop().mode
        folded.append(stage)
    paired: List = []
    i = 0
    while i < len(folded):
        stage = folded[i]
        following = folded[i + 1] if i + 1 < len(folded) else None
        first_conv, second_conv = _single_conv(stage), _single_conv(following)
        if first_conv is not None and second_conv is not None and first_conv.onednn == second_conv.onednn:
            act1, act2 = stage.ffc.act_l, following.ffc.act_l
            paired.append(_StripedPair(
                stage, following, _Conv(second_conv, act2),
                first_size=first_conv.output_size,
                first_rows=lambda x, h, low, high, c=first_conv, a=act1: c.output_rows(
                    lambda lo, hi: x[:, :, lo:hi].to(c.dtype), h, low, high, a),
                first_bytes=lambda n, h, w, c=first_conv: c.out_channels * h * w * n * _itemsize(c.dtype),
                wrap_tuple=True,
            ))
            i += 2
            continue
        if isinstance(stage, PackedConvTranspose) and stage.phases is not None and isinstance(following, _Conv):
            paired.append(_StripedPair(
                stage, following, following,
                first_size=lambda h, w: (2 * h, 2 * w),
                first_rows=lambda x, h, low, high, t=stage: t.output_rows(x.to(t.dtype), low, high),
                first_bytes=lambda n, h, w, t=stage: t.out_channels * h * w * n * _itemsize(t.dtype),
                wrap_tuple=False,
            ))
            i += 2
            continue
        paired.append(stage)
        i += 1
    return paired


def conv_followers(layers: List[nn.Module], i: int) -> Tuple[torch.Tensor, torch.Tensor, Optional[str], int]:
    """For the convolution ``layers[i]``: the scale and shift of a BatchNorm2d right after it (identity
    without one), the name of an activation after that (or None), and how many layers the three are."""
    channels = layers[i].out_channels
    consumed = 1
    scale, shift = batchnorm_scale_shift(None, channels)
    if i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
        scale, shift = batchnorm_scale_shift(layers[i + 1], channels)
        consumed += 1
    activation = None
    if i + consumed < len(layers) and isinstance(layers[i + consumed], (nn.ReLU, nn.Sigmoid, nn.Tanh)):
        activation = _activation_name(layers[i + consumed], f"model.{i + consumed}")
        consumed += 1
    return scale, shift, activation, consumed


def convert_stages(generator: nn.Module, dtype: torch.dtype, output_conv_dtype: Optional[torch.dtype] = None,
                   conv_algorithm: str = "auto") -> List:
    """The generator's ``model`` Sequential as a list of fused callables.

    ``output_conv_dtype`` (default ``dtype``) is the dtype of the last convolution, the one
    that makes the image: bfloat16 there would cost the output about a level of 8-bit colour.
    """
    layers = list(getattr(generator, "model", []))
    if not layers:
        raise UnsupportedModelError(f"{type(generator).__name__} has no 'model' Sequential of LaMa layers")
    last_conv = max((j for j, m in enumerate(layers) if isinstance(m, nn.Conv2d)), default=-1)
    stages: List = []
    i = 0
    while i < len(layers):
        layer, where = layers[i], f"model.{i}"
        if hasattr(layer, "ffc"):
            stages.append(_Layer(convert_ffc_layer(layer, dtype, where, conv_algorithm)))
        elif hasattr(layer, "conv1") and hasattr(layer, "conv2") and hasattr(layer.conv1, "ffc"):
            if getattr(layer, "inline", False):
                raise UnsupportedModelError(f"{where}: inline residual blocks are not supported")
            stages.append(_ResBlock(convert_ffc_layer(layer.conv1, dtype, where + ".conv1", conv_algorithm),
                                    convert_ffc_layer(layer.conv2, dtype, where + ".conv2", conv_algorithm)))
        elif type(layer).__name__ == "ConcatTupleLayer":
            stages.append(_Concat())
        elif isinstance(layer, (nn.ConvTranspose2d, nn.Conv2d)):
            scale, shift, activation, consumed = conv_followers(layers, i)
            if isinstance(layer, nn.ConvTranspose2d):
                if layer.groups != 1:
                    raise UnsupportedModelError(f"{where}: grouped transposed convolutions are not supported")
                weight, bias = fold_batchnorm(layer.weight, layer.bias, scale, shift, out_dim=1)
                stages.append(PackedConvTranspose(weight, bias, dtype, layer.stride, layer.padding,
                                                  layer.output_padding, layer.dilation, activation))
            else:
                weight, bias = fold_batchnorm(layer.weight, layer.bias, scale, shift)
                conv_dtype = output_conv_dtype if (i == last_conv and output_conv_dtype is not None) else dtype
                stages.append(_Conv(_conv_with(layer, weight, bias, conv_dtype, where), activation))
            i += consumed
            continue
        else:
            stages.extend(plain_stage(layer, where))
        i += 1
    return _pair_up(stages)


def plain_stage(layer: nn.Module, where: str) -> List:
    """The stage of a layer that is neither an FFC nor a convolution: a pad or an activation
    (device-agnostic), nothing for ``nn.Identity``; anything else is not supported."""
    if isinstance(layer, (nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ZeroPad2d)):
        return [_Pad(layer)]
    if isinstance(layer, (nn.ReLU, nn.Sigmoid, nn.Tanh)):
        return [_Activation(_activation_name(layer, where))]
    if isinstance(layer, nn.Identity):
        return []
    if isinstance(layer, nn.BatchNorm2d):
        raise UnsupportedModelError(f"{where}: a BatchNorm2d not preceded by a convolution")
    raise UnsupportedModelError(f"{where}: layer {type(layer).__name__} is not supported")


class _Activation:
    def __init__(self, name: Optional[str]) -> None:
        self.name = name

    def __call__(self, x):
        return activate(x, self.name)


__all__ = ["convert_stages", "convert_ffc_layer", "fuse_spectral", "UnsupportedModelError"]
