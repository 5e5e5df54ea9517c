"""The reference PyTorch model of LaMa, state-dict compatible with the released checkpoints."""

from .ffc import FFC, FFC_BN_ACT, ConcatTupleLayer, FFCResnetBlock, FourierUnit, SpectralTransform
from .generator import NAMED_CONFIGS, FFCResNetGenerator, build_generator

__all__ = [
    "FFC", "FFC_BN_ACT", "ConcatTupleLayer", "FFCResnetBlock", "FFCResNetGenerator", "FourierUnit",
    "NAMED_CONFIGS", "SpectralTransform", "build_generator",
]
