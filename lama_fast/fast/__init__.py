"""The fast CPU generator: the rewrite (``lama_fast.rewrite``) run with prepacked weights and the fused spectral op.

``lama_fast.optimize(generator, backend="cpu")`` is the public entry point;
``FastGenerator`` is what it returns.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from ..memory import release_free_heap
from ..rewrite import UnsupportedModelError, batchnorm_scale_shift, fold_batchnorm, input_channels
from ..rewrite.run import chain, check_input, to_channels_last
from .convert import convert_ffc_layer, convert_stages
from .layers import WORKSPACE, PackedConv

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float64)

__all__ = ["FastGenerator", "UnsupportedModelError", "batchnorm_scale_shift", "fold_batchnorm", "build_fast_generator",
           "convert_ffc_layer"]


class FastGenerator(nn.Module):
    """Inference-only LaMa generator: (N, 4, H, W) masked image + mask in, (N, 3, H, W) out.

    ``compute_dtype`` is what the convolutions run in; inputs and outputs are
    float32 (float64 for a float64 model), so a bfloat16 model drops in where
    a float32 one was.
    """

    def __init__(self, stages: List[Any], compute_dtype: torch.dtype, in_channels: Optional[int],
                 config: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.stages = stages
        self.compute_dtype = compute_dtype
        self.io_dtype = torch.float64 if compute_dtype == torch.float64 else torch.float32
        self.in_channels = in_channels
        self.config = config
        # Work buffers reused between calls, per thread (see layers.Workspace); a
        # thread's buffers go when the thread does.
        self.keep_buffers = True
        # The first call first returns the heap's free pages to the system: the generator this
        # module was built from is usually dropped by then (see memory.release_free_heap).
        self._heap_released = False
        self._work_buffers: "weakref.WeakKeyDictionary[threading.Thread, Dict[Any, torch.Tensor]]" = \
            weakref.WeakKeyDictionary()
        # Inpainter reads the device and dtype of its generator's inputs from here.
        self.register_buffer("_io_marker", torch.zeros((), dtype=self.io_dtype), persistent=False)

    def extra_repr(self) -> str:
        return f"compute_dtype={self.compute_dtype}, stages={len(self.stages)}, convs={self.conv_algorithms()}"

    def conv_algorithms(self) -> Dict[str, int]:
        """How many convolutions run with each algorithm ("winograd", "onednn", "aten")."""
        counts: Dict[str, int] = {}
        seen = set()

        def visit(obj) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if isinstance(obj, PackedConv):
                counts[obj.algorithm] = counts.get(obj.algorithm, 0) + 1
                return
            if isinstance(obj, (list, tuple)):
                for item in obj:
                    visit(item)
                return
            for value in getattr(obj, "__dict__", {}).values():
                if isinstance(value, (list, tuple)) or (hasattr(value, "__dict__") and not torch.is_tensor(value)):
                    visit(value)

        for stage in self.stages:
            visit(stage)
        return counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels)
        if x.device.type != "cpu":
            raise ValueError(f"the cpu backend runs on CPU tensors, got one on {x.device}")
        if not self._heap_released:
            self._heap_released = True
            release_free_heap()
        previous = WORKSPACE.active
        WORKSPACE.active = self._work_buffers.setdefault(threading.current_thread(), {}) if self.keep_buffers else None
        try:
            with torch.no_grad():
                out = chain(self.stages, to_channels_last(x.to(self.compute_dtype)))
                result = out.to(self.io_dtype).contiguous()
                # The last layer may have written into a workspace buffer: never hand that out.
                return result.clone() if result.data_ptr() == out.data_ptr() else result
        finally:
            WORKSPACE.active = previous

    def release_buffers(self) -> None:
        """Free the work buffers kept between calls (they come back on the next call)."""
        self._work_buffers.clear()


def build_fast_generator(generator: nn.Module, dtype: torch.dtype, conv_algorithm: str = "auto") -> FastGenerator:
    """The fast CPU module computing ``generator`` in ``dtype`` (float32, bfloat16 or float64).

    ``conv_algorithm`` ("auto", "direct") picks how the residual blocks' 3x3
    convolutions run: "auto" uses the Winograd kernels in float32 where the CPU
    has AVX2 or AVX-512 (about 3x oneDNN's direct convolution here), else oneDNN.
    """
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"the cpu backend runs in float32, bfloat16 or float64, got {dtype}")
    if conv_algorithm not in ("auto", "direct"):
        raise ValueError(f"conv_algorithm must be 'auto' or 'direct', got {conv_algorithm!r}")
    output_conv_dtype = torch.float32 if dtype == torch.bfloat16 else None
    stages = convert_stages(generator, dtype, output_conv_dtype, conv_algorithm)
    return FastGenerator(stages, dtype, input_channels(generator), getattr(generator, "config", None))
