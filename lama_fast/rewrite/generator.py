"""A LaMa generator as a list of records (``lama_fast.rewrite.records``), BatchNorm folded, in float64.

Works on lama_fast's reference generator and on one built by the original
``saicinpainting`` code: both keep the layers in ``generator.model`` (an
``nn.Sequential``) under the same names; the original uses ``nn.Identity``
where ours has ``None`` for a missing branch, norm or activation.  Every
"is this model supported" check is made here.
"""

from __future__ import annotations

import copy
from typing import Iterator, List, Optional, Tuple

import torch
from torch import nn

from .fold import UnsupportedModelError, batchnorm_scale_shift, fold_batchnorm
from .records import FFC, Activation, Concat, Conv, ConvTranspose, Pad, Record, ResBlock, stack_convs
from .spectral import fold_spectral, is_absent


def activation_name(module: Optional[nn.Module], where: str) -> Optional[str]:
    """"relu", "sigmoid" or "tanh" for an activation module, None for a missing one."""
    if is_absent(module):
        return None
    if isinstance(module, nn.ReLU):
        return "relu"
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    if isinstance(module, nn.Tanh):
        return "tanh"
    raise UnsupportedModelError(f"{where}: activation {type(module).__name__} is not supported (ReLU only)")


def conv_record(conv: nn.Conv2d, weight: torch.Tensor, bias: Optional[torch.Tensor], where: str,
                activation: Optional[str] = None, output: bool = False) -> Conv:
    """``conv``'s geometry with a folded weight and bias; a non-zero padding mode becomes explicit padding."""
    if conv.groups != 1:
        raise UnsupportedModelError(f"{where}: grouped convolutions (groups={conv.groups}) are not supported")
    if isinstance(conv.padding, str):
        raise UnsupportedModelError(f"{where}: string padding {conv.padding!r} is not supported")
    pad_h, pad_w = (int(p) for p in conv.padding)
    zeros = conv.padding_mode == "zeros"
    explicit = (pad_w, pad_w, pad_h, pad_h) if not zeros and (pad_h or pad_w) else None
    return Conv(weight, bias, _pair(conv.stride), (pad_h, pad_w) if zeros else (0, 0), _pair(conv.dilation),
                explicit, conv.padding_mode, activation, output)


def _pair(value) -> Tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def rewrite_ffc_layer(layer: nn.Module, where: str) -> FFC:
    """An FFC_BN_ACT (ours or the original's) as an FFC record with its BatchNorms folded."""
    ffc = layer.ffc
    if getattr(ffc, "gated", False):
        raise UnsupportedModelError(f"{where}: gated FFC layers are not supported")
    l2l, l2g, g2l, g2g = (None if is_absent(m) else m for m in (ffc.convl2l, ffc.convl2g, ffc.convg2l, ffc.convg2g))
    for name, conv in (("convl2l", l2l), ("convl2g", l2g), ("convg2l", g2l)):
        if conv is not None and not isinstance(conv, nn.Conv2d):
            raise UnsupportedModelError(f"{where}.{name}: {type(conv).__name__} is not supported")
    local_convs = [c for c in (l2l, g2l) if c is not None]
    out_cl = local_convs[0].out_channels if local_convs else 0
    if g2g is not None:
        out_cg = g2g.conv2.out_channels
    else:
        out_cg = l2g.out_channels if l2g is not None else 0
    act_l = activation_name(getattr(layer, "act_l", None), where + ".act_l") if out_cl else None
    act_g = activation_name(getattr(layer, "act_g", None), where + ".act_g") if out_cg else None
    if g2g is not None and act_g not in (None, "relu"):
        raise UnsupportedModelError(f"{where}: activation {act_g} after a spectral branch is not supported")
    scale_l, shift_l = batchnorm_scale_shift(getattr(layer, "bn_l", None), out_cl) if out_cl else (None, None)
    scale_g, shift_g = batchnorm_scale_shift(getattr(layer, "bn_g", None), out_cg) if out_cg else (None, None)

    def folded(conv: Optional[nn.Conv2d], scale, shift, with_shift: bool, name: str) -> Optional[Conv]:
        if conv is None:
            return None
        weight, bias = fold_batchnorm(conv.weight, conv.bias, scale, shift)
        if not with_shift:
            # The shift is added once per output, by the first convolution that carries it.
            bias = None if conv.bias is None else conv.bias.detach().double() * scale
        return conv_record(conv, weight, bias, name)

    # Merge the two convolutions of the local input when there is no global input.
    if g2l is None and g2g is None and l2l is not None and l2g is not None and act_l == act_g:
        merged = stack_convs(folded(l2l, scale_l, shift_l, True, where), folded(l2g, scale_g, shift_g, True, where))
        return FFC(None, None, None, None, merged, None, act_l, act_g, split=out_cl)
    conv_l2l = folded(l2l, scale_l, shift_l, True, where + ".convl2l")
    conv_g2l = folded(g2l, scale_l, shift_l, l2l is None, where + ".convg2l")
    conv_l2g = folded(l2g, scale_g, shift_g, True, where + ".convl2g")
    spectral = bias_g = None
    if g2g is not None:
        spectral = fold_spectral(g2g, scale_g, where + ".convg2g")
        if l2g is None:
            bias_g = shift_g
    return FFC(conv_l2l, conv_g2l, conv_l2g, spectral, None, bias_g, act_l, act_g, split=out_cl)


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
        activation = activation_name(layers[i + consumed], f"model.{i + consumed}")
        consumed += 1
    return scale, shift, activation, consumed


def plain_stage(layer: nn.Module, where: str) -> List[Record]:
    """The record of a layer that is neither an FFC nor a convolution: a pad or an activation,
    nothing for ``nn.Identity``; anything else is not supported."""
    if isinstance(layer, (nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ZeroPad2d)):
        padding = layer.padding
        mode = "reflect" if isinstance(layer, nn.ReflectionPad2d) else (
            "replicate" if isinstance(layer, nn.ReplicationPad2d) else "constant")
        return [Pad((padding,) * 4 if isinstance(padding, int) else tuple(int(p) for p in padding), mode)]
    if isinstance(layer, (nn.ReLU, nn.Sigmoid, nn.Tanh)):
        return [Activation(activation_name(layer, where))]
    if isinstance(layer, nn.Identity):
        return []
    if isinstance(layer, nn.BatchNorm2d):
        raise UnsupportedModelError(f"{where}: a BatchNorm2d not preceded by a convolution")
    raise UnsupportedModelError(f"{where}: layer {type(layer).__name__} is not supported")


def rewrite_generator(generator: nn.Module) -> List[Record]:
    """The generator's ``model`` Sequential as records, in order (pads not yet folded: see ``fold_pads``)."""
    return list(iter_records(generator))


def iter_records(generator: nn.Module) -> Iterator[Record]:
    """``rewrite_generator``'s records one at a time: an executor that turns each into its layer before
    taking the next never holds the whole model's float64 weights at once."""
    if any(t.device.type != "cpu" for t in list(generator.parameters()) + list(generator.buffers())):
        # The folds combine the layers' tensors with CPU ones (a missing norm's unit scale).
        generator = copy.deepcopy(generator).cpu()
    layers = list(getattr(generator, "model", []))
    if not layers:
        raise UnsupportedModelError(f"{type(generator).__name__} has no 'model' Sequential of LaMa layers")
    return _records(layers)


def _records(layers: List[nn.Module]) -> Iterator[Record]:
    last_conv = max((j for j, m in enumerate(layers) if isinstance(m, nn.Conv2d)), default=-1)
    i = 0
    while i < len(layers):
        layer, where = layers[i], f"model.{i}"
        if hasattr(layer, "ffc"):
            yield rewrite_ffc_layer(layer, where)
        elif hasattr(layer, "conv1") and hasattr(layer, "conv2") and hasattr(layer.conv1, "ffc"):
            if getattr(layer, "inline", False):
                raise UnsupportedModelError(f"{where}: inline residual blocks are not supported")
            yield ResBlock(rewrite_ffc_layer(layer.conv1, where + ".conv1"),
                           rewrite_ffc_layer(layer.conv2, where + ".conv2"))
        elif type(layer).__name__ == "ConcatTupleLayer":
            yield Concat()
        elif isinstance(layer, (nn.ConvTranspose2d, nn.Conv2d)):
            scale, shift, activation, consumed = conv_followers(layers, i)
            if isinstance(layer, nn.ConvTranspose2d):
                if layer.groups != 1:
                    raise UnsupportedModelError(f"{where}: grouped transposed convolutions are not supported")
                weight, bias = fold_batchnorm(layer.weight, layer.bias, scale, shift, out_dim=1)
                yield ConvTranspose(weight, bias, _pair(layer.stride), _pair(layer.padding),
                                    _pair(layer.output_padding), _pair(layer.dilation), activation)
            else:
                weight, bias = fold_batchnorm(layer.weight, layer.bias, scale, shift)
                yield conv_record(layer, weight, bias, where, activation, output=i == last_conv)
            i += consumed
            continue
        else:
            yield from plain_stage(layer, where)
        i += 1


def input_channels(generator: nn.Module) -> Optional[int]:
    """The input channels of the generator's first convolution (None without one)."""
    first = next((m for m in generator.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else None
