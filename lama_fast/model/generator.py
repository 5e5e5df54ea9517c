"""The FFC ResNet generator and the configurations of the released models."""

from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, Union

import torch
from torch import nn

from .ffc import FFT_NORMS, ConcatTupleLayer, FFC_BN_ACT, FFCResnetBlock

# Constructor arguments of the released generators, with the original's keyword names.
NAMED_CONFIGS: Dict[str, Dict[str, Any]] = {
    "big-lama": {
        "input_nc": 4,
        "output_nc": 3,
        "ngf": 64,
        "n_downsampling": 3,
        "n_blocks": 18,
        "add_out_act": "sigmoid",
        "init_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, "enable_lfu": False},
        "downsample_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, "enable_lfu": False},
        "resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75, "enable_lfu": False},
    },
}
NAMED_CONFIGS["lama-fourier"] = {**copy.deepcopy(NAMED_CONFIGS["big-lama"]), "n_blocks": 9}

CONV_OPTIONS = ("ratio_gin", "ratio_gout", "enable_lfu", "fft_norm", "gated")
# Options of the original constructor that we accept only at their default
# value: any other value changes the architecture in ways no released model uses.
DEFAULT_ONLY_OPTIONS = {
    "spatial_transform_layers": None,
    "spatial_transform_kwargs": {},
    "out_ffc": False,
    "out_ffc_kwargs": {},
}
GENERATOR_OPTIONS = (
    "input_nc", "output_nc", "ngf", "n_downsampling", "n_blocks", "padding_type",
    "init_conv_kwargs", "downsample_conv_kwargs", "resnet_conv_kwargs", "add_out_act",
    "max_features",
)
OUTPUT_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
PADDING_TYPES = ("reflect", "zeros", "replicate", "circular")


def _conv_kwargs(stage: str, kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"{stage} must be a mapping, got {type(kwargs).__name__}")
    unknown = sorted(set(kwargs) - set(CONV_OPTIONS))
    if unknown:
        raise ValueError(
            f"unsupported generator option(s) {', '.join(f'{stage}.{k}' for k in unknown)}; "
            f"supported per-stage options are {', '.join(CONV_OPTIONS)}"
        )
    out = dict(kwargs)
    for key in ("ratio_gin", "ratio_gout"):
        ratio = out.get(key, 0)
        if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
            raise ValueError(f"{stage}.{key} must be a number in [0, 1], got {ratio!r}")
    if out.get("fft_norm", "ortho") not in FFT_NORMS:
        raise ValueError(f"{stage}.fft_norm must be one of {FFT_NORMS}, got {out['fft_norm']!r}")
    return out


class FFCResNetGenerator(nn.Module):
    """LaMa's generator: 4-channel masked image in, 3-channel image out (see DESIGN.md)."""

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int = 64,
        n_downsampling: int = 3,
        n_blocks: int = 9,
        padding_type: str = "reflect",
        init_conv_kwargs: Mapping[str, Any] = {},
        downsample_conv_kwargs: Mapping[str, Any] = {},
        resnet_conv_kwargs: Mapping[str, Any] = {},
        add_out_act: Union[bool, str] = True,
        max_features: int = 1024,
    ) -> None:
        super().__init__()
        for name, value in (("input_nc", input_nc), ("output_nc", output_nc), ("ngf", ngf),
                            ("max_features", max_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("n_downsampling", n_downsampling), ("n_blocks", n_blocks)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if padding_type not in PADDING_TYPES:
            raise ValueError(f"padding_type must be one of {PADDING_TYPES}, got {padding_type!r}")
        if add_out_act is not True and add_out_act is not False and add_out_act not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"add_out_act must be True, False, 'sigmoid' or 'tanh', got {add_out_act!r}")
        init_kw = _conv_kwargs("init_conv_kwargs", init_conv_kwargs)
        down_kw = _conv_kwargs("downsample_conv_kwargs", downsample_conv_kwargs)
        res_kw = _conv_kwargs("resnet_conv_kwargs", resnet_conv_kwargs)
        if init_kw.get("ratio_gin", 0) != 0:
            raise ValueError("init_conv_kwargs.ratio_gin must be 0: the generator's input has no global part")

        def width(mult: float) -> int:
            return min(max_features, int(ngf * mult))

        # (in_channels, out_channels, conv kwargs) of each FFC layer before the blocks,
        # kept to check that each layer's global input matches its predecessor's output.
        layers = [(input_nc, ngf, init_kw)]
        model: list = [nn.ReflectionPad2d(3), FFC_BN_ACT(input_nc, ngf, 7, activation=True, **_ffc(init_kw))]
        for i in range(n_downsampling):
            kw = dict(down_kw)
            if i == n_downsampling - 1:
                kw["ratio_gout"] = res_kw.get("ratio_gin", 0)
            cin, cout = width(2 ** i), width(2 ** (i + 1))
            layers.append((cin, cout, kw))
            model.append(FFC_BN_ACT(cin, cout, 3, stride=2, padding=1, activation=True, **_ffc(kw)))
        bottleneck = width(2 ** n_downsampling)
        layers += [(bottleneck, bottleneck, res_kw)] * n_blocks
        _check_global_channels(layers)
        for _ in range(n_blocks):
            model.append(FFCResnetBlock(bottleneck, padding_type=padding_type, **_ffc(res_kw)))
        model.append(ConcatTupleLayer())
        for i in range(n_downsampling):
            mult = 2 ** (n_downsampling - i)
            cin, cout = width(mult), width(mult / 2)
            model += [
                nn.ConvTranspose2d(cin, cout, kernel_size=3, stride=2, padding=1, output_padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7)]
        if add_out_act:
            model.append(OUTPUT_ACTIVATIONS["tanh" if add_out_act is True else add_out_act]())
        self.model = nn.Sequential(*model)
        self.config: Dict[str, Any] = {
            "input_nc": input_nc, "output_nc": output_nc, "ngf": ngf,
            "n_downsampling": n_downsampling, "n_blocks": n_blocks, "padding_type": padding_type,
            "init_conv_kwargs": dict(init_kw), "downsample_conv_kwargs": dict(down_kw),
            "resnet_conv_kwargs": dict(res_kw), "add_out_act": add_out_act, "max_features": max_features,
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _ffc(kw: Mapping[str, Any]) -> Dict[str, Any]:
    """Constructor kwargs of FFC_BN_ACT, with the original's defaults (LFU on unless disabled)."""
    return {
        "ratio_gin": kw.get("ratio_gin", 0),
        "ratio_gout": kw.get("ratio_gout", 0),
        "enable_lfu": kw.get("enable_lfu", True),
        "gated": kw.get("gated", False),
        "fft_norm": kw.get("fft_norm", "ortho"),
    }


def _check_global_channels(layers) -> None:
    for (cin_prev, cout_prev, kw_prev), (cin, _, kw) in zip(layers, layers[1:]):
        produced = int(cout_prev * kw_prev.get("ratio_gout", 0))
        consumed = int(cin * kw.get("ratio_gin", 0))
        if produced != consumed:
            raise ValueError(
                f"inconsistent ratios: a layer produces {produced} global channels but the next "
                f"one expects {consumed} (ratio_gout={kw_prev.get('ratio_gout', 0)} then "
                f"ratio_gin={kw.get('ratio_gin', 0)})"
            )


def build_generator(config: Union[str, Mapping[str, Any]] = "big-lama") -> FFCResNetGenerator:
    """Build a generator from a released model's name or the original constructor's keywords."""
    if isinstance(config, str):
        if config not in NAMED_CONFIGS:
            raise ValueError(f"unknown model {config!r}; named models are {', '.join(NAMED_CONFIGS)}")
        config = NAMED_CONFIGS[config]
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a model name or a mapping, got {type(config).__name__}")
    config = dict(config)
    kind = config.pop("kind", "ffc_resnet")
    if kind != "ffc_resnet":
        raise ValueError(f"unsupported generator kind {kind!r}; only 'ffc_resnet' (LaMa's FFC generator)")
    for key, default in DEFAULT_ONLY_OPTIONS.items():
        if key in config and config.pop(key) != default:
            raise ValueError(f"unsupported generator option {key!r} (only its default {default!r} is supported)")
    unknown = sorted(set(config) - set(GENERATOR_OPTIONS))
    if unknown:
        raise ValueError(f"unsupported generator option(s) {', '.join(map(repr, unknown))}")
    for key in ("input_nc", "output_nc"):
        if key not in config:
            raise ValueError(f"generator config is missing {key!r}")
    return FFCResNetGenerator(**copy.deepcopy(config))
