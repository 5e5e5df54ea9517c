"""The generator's config: inferred from the weights' shapes, or read from a file and checked.

A config that comes from a file decides how large a module is built, so every field is
checked against a range that holds the released models with room to spare before any
module is built.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..model.ffc import FFT_NORMS
from ..model.generator import CONV_OPTIONS, DEFAULT_ONLY_OPTIONS, GENERATOR_OPTIONS, OUTPUT_ACTIVATIONS, PADDING_TYPES
from .limits import CheckpointError
from .weights import preview

# Ranges of the integer fields of a config read from a file (big-lama: 4, 3, 64, 3, 18, 1024).
INT_RANGES = {
    "input_nc": (1, 64), "output_nc": (1, 64), "ngf": (1, 1024), "n_downsampling": (0, 6),
    "n_blocks": (0, 64), "max_features": (1, 8192),
}


def infer_config(shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, Any]:
    """The original constructor's keyword config, from a generator state dict's shapes."""
    # Two settings leave no trace in the weights and take the released models' values:
    # add_out_act="sigmoid" (every released LaMa ends in a sigmoid) and the FFT
    # normalisation "ortho" (the builder's default, so it is not listed). padding_type
    # is not listed either: it only sets the convs' padding mode, "reflect" by default.
    config = _infer_config(shapes)
    check_config(config, "the config inferred from its weights")
    return config


def check_config(config: Any, source: str) -> None:
    """Refuse a config whose structure or values lie outside what a LaMa generator can be."""
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{source} is not a JSON object")
    for key, value in config.items():
        if key in INT_RANGES:
            low, high = INT_RANGES[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise CheckpointError(f"{source}: {key} must be an integer in [{low}, {high}], got {_short(value)}")
        elif key.endswith("_conv_kwargs") and key in GENERATOR_OPTIONS:
            if not isinstance(value, Mapping):
                raise CheckpointError(f"{source}: {key} must be an object, got {_short(value)}")
            for option, setting in value.items():
                if option not in CONV_OPTIONS:
                    raise CheckpointError(f"{source}: unsupported option {key}.{option}")
                if option in ("ratio_gin", "ratio_gout"):
                    ok = (isinstance(setting, (int, float)) and not isinstance(setting, bool)
                          and math.isfinite(setting) and 0 <= setting <= 1)
                elif option == "fft_norm":
                    ok = setting in FFT_NORMS
                else:
                    ok = isinstance(setting, bool)
                if not ok:
                    raise CheckpointError(f"{source}: {key}.{option} has an unsupported value {_short(setting)}")
        elif key == "padding_type":
            if value not in PADDING_TYPES:
                raise CheckpointError(f"{source}: padding_type must be one of {', '.join(PADDING_TYPES)}, "
                                      f"got {_short(value)}")
        elif key == "add_out_act":
            if not (isinstance(value, bool) or value in OUTPUT_ACTIVATIONS):
                raise CheckpointError(f"{source}: add_out_act must be true, false, 'sigmoid' or 'tanh', "
                                      f"got {_short(value)}")
        elif key == "kind":
            if value != "ffc_resnet":
                raise CheckpointError(f"{source}: kind must be 'ffc_resnet', got {_short(value)}")
        elif key in DEFAULT_ONLY_OPTIONS:
            if value != DEFAULT_ONLY_OPTIONS[key]:
                raise CheckpointError(f"{source}: unsupported option {key!r} (only its default is supported)")
        else:
            raise CheckpointError(f"{source}: unknown option {_short(key)}")


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, (int, float, str, bool, type(None))) else f"a {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class _Layer:
    """Channel counts of one FFC_BN_ACT layer, as far as its weights show them."""

    prefix: str
    in_local: int
    in_global: int
    out_local: int
    out_global: int
    lfu: bool
    gated: bool

    @property
    def in_channels(self) -> int:
        return self.in_local + self.in_global

    @property
    def out_channels(self) -> int:
        return self.out_local + self.out_global


def _first_dim(shapes: Mapping[str, Tuple[int, ...]], dim: int, *keys: str) -> Optional[int]:
    # Several weights show the same count: take whichever is present, so one
    # missing key in a damaged file still leaves the config inferable.
    for key in keys:
        shape = shapes.get(key)
        if shape is not None and len(shape) > dim:
            return shape[dim]
    return None


def _layer(shapes: Mapping[str, Tuple[int, ...]], prefix: str) -> _Layer:
    f = f"{prefix}.ffc."
    in_local = _first_dim(shapes, 1, f + "convl2l.weight", f + "convl2g.weight") or 0
    in_global = _first_dim(shapes, 1, f + "convg2l.weight", f + "convg2g.conv1.0.weight") or 0
    out_local = _first_dim(shapes, 0, f"{prefix}.bn_l.weight", f"{prefix}.bn_l.running_mean",
                           f + "convl2l.weight", f + "convg2l.weight") or 0
    out_global = _first_dim(shapes, 0, f"{prefix}.bn_g.weight", f"{prefix}.bn_g.running_mean",
                            f + "convl2g.weight", f + "convg2g.conv2.weight") or 0
    return _Layer(
        prefix, in_local, in_global, out_local, out_global,
        lfu=any(k.startswith(f + "convg2g.lfu.") for k in shapes),
        gated=any(k.startswith(f + "gate.") for k in shapes),
    )


def _ratio(observations: Sequence[Tuple[int, int]]) -> Union[int, float]:
    """The ratio r with int(total * r) == part for (global, total) channel counts, as short a decimal as possible."""
    # When the layers disagree (a damaged file), the ratio that fits most of them wins,
    # so the key check can then name the odd tensors instead of inference failing.
    observations = [(part, total) for part, total in observations if total > 0]
    if not observations:
        return 0
    candidates: List[Union[int, float]] = []
    for part, total in observations:
        if part == 0:
            candidates.append(0)
        elif part == total:
            candidates.append(1)
        else:
            candidates += [round(part / total, digits) for digits in range(1, 10)]
            exact = part / total
            # float rounding can put part/total just below the value that int() needs
            candidates += [exact, math.nextafter(exact, 2.0), math.nextafter(math.nextafter(exact, 2.0), 2.0)]

    def score(r: Union[int, float]) -> Tuple[int, int]:
        fitted = sum(int(total * r) == part for part, total in observations)
        return fitted, -len(repr(r))

    return max(candidates, key=score)


_FFC_LAYER = re.compile(r"^model\.(\d+)\.ffc\.")
_BLOCK_LAYER = re.compile(r"^model\.(\d+)\.conv([12])\.ffc\.")
_PLAIN_WEIGHT = re.compile(r"^model\.(\d+)\.(?:weight|bias)$")


def _infer_config(shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, Any]:
    layer_ids = sorted({int(m.group(1)) for k in shapes if (m := _FFC_LAYER.match(k))})
    block_ids = sorted({int(m.group(1)) for k in shapes if (m := _BLOCK_LAYER.match(k))})
    if not layer_ids:
        raise CheckpointError(
            "cannot infer the generator configuration: no FFC layers ('model.N.ffc.*') in the "
            f"weights (keys: {preview(shapes)})"
        )
    init, *downs = [_layer(shapes, f"model.{i}") for i in layer_ids]
    blocks = [_layer(shapes, f"model.{i}.conv{j}") for i in block_ids for j in (1, 2)]
    if init.in_global:
        raise CheckpointError("cannot infer the generator configuration: its first layer has global input channels")

    ngf = init.out_channels
    widths = [ngf] + [d.out_channels for d in downs]
    config: Dict[str, Any] = {
        "input_nc": init.in_channels,
        "output_nc": _output_channels(shapes),
        "ngf": ngf,
        "n_downsampling": len(downs),
        "n_blocks": len(block_ids),
    }
    uncapped = [ngf * 2**k for k in range(len(widths))]
    capped = [w for w, u in zip(widths, uncapped) if w < u]
    if capped:
        config["max_features"] = min(capped)
    elif max(widths) > 1024:  # wider than the constructor's default cap
        config["max_features"] = max(widths)
    config["add_out_act"] = "sigmoid"

    # The last downsampling layer's global output is set by the blocks' ratio_gin,
    # not by downsample_conv_kwargs, so it counts as a resnet observation.
    before_blocks = downs[-1:] if downs else []
    res_gin = _ratio([(l.out_global, l.out_channels) for l in before_blocks]
                     + [(l.in_global, l.in_channels) for l in blocks])
    res_gout = (_ratio([(l.out_global, l.out_channels) for l in blocks])
                if blocks else res_gin)
    config["init_conv_kwargs"] = _stage_kwargs(
        [init], 0, _ratio([(init.out_global, init.out_channels)]))
    config["downsample_conv_kwargs"] = _stage_kwargs(
        downs,
        _ratio([(l.in_global, l.in_channels) for l in downs]),
        _ratio([(l.out_global, l.out_channels) for l in downs[:-1]]),
    )
    config["resnet_conv_kwargs"] = _stage_kwargs(blocks, res_gin, res_gout)
    return config


def _stage_kwargs(layers: Sequence[_Layer], ratio_gin: Union[int, float],
                  ratio_gout: Union[int, float]) -> Dict[str, Any]:
    # enable_lfu is False unless LFU weights exist: the constructor defaults it to True,
    # which would add weights to any layer with a global-to-global branch.
    kwargs: Dict[str, Any] = {
        "ratio_gin": ratio_gin,
        "ratio_gout": ratio_gout,
        "enable_lfu": any(l.lfu for l in layers),
    }
    if any(l.gated for l in layers):
        kwargs["gated"] = True
    return kwargs


def _output_channels(shapes: Mapping[str, Tuple[int, ...]]) -> int:
    plain = [(int(m.group(1)), k) for k in shapes if (m := _PLAIN_WEIGHT.match(k))]
    if not plain:
        return 3  # the output conv is missing; the key check will say so
    last = max(i for i, _ in plain)
    shape = shapes.get(f"model.{last}.weight") or shapes.get(f"model.{last}.bias")
    return shape[0]

