"""A small generator config in the released layout (big-lama's ratios, fewer and narrower layers)."""

from __future__ import annotations

import copy

TINY_CONFIG = {
    "input_nc": 4, "output_nc": 3, "ngf": 8, "n_downsampling": 2, "n_blocks": 1, "add_out_act": "sigmoid",
    "init_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, "enable_lfu": False},
    "downsample_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, "enable_lfu": False},
    "resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75, "enable_lfu": False},
}


def tiny_config(**changes) -> dict:
    """TINY_CONFIG with some keys replaced (a fresh copy each call)."""
    return {**copy.deepcopy(TINY_CONFIG), **changes}
