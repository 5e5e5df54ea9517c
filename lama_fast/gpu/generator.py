"""The generator placed on a GPU: folded cuDNN convolutions and the Triton (or CUDA) spectral transform.

The rewrite (``lama_fast.rewrite``) folds the layers in float64; each folded
weight is moved to the device in the compute dtype.  Every pad before an
unpadded convolution folds into it.  Activations are channels-last;
float16/bfloat16 models take float32 in and give float32 out, with the output
convolution in float32.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..rewrite import (
    FFC,
    Conv,
    ConvTranspose,
    Spectral,
    fold_pads,
    input_channels,
    iter_records,
    same_geometry,
    stack_convs,
)
from ..rewrite.run import Branches, activate, build_stages, check_input, ffc_layers, global_output, to_channels_last
from .graphs import GraphCache


def _place(t: Optional[torch.Tensor], device, dtype, memory_format=torch.contiguous_format) -> Optional[torch.Tensor]:
    return None if t is None else t.detach().to(device=device, dtype=dtype).contiguous(memory_format=memory_format)


# With the fused layout, convolutions with fewer channels than this on a side (LaMa's 7x7 input and output
# convolutions: 4 in, 3 out) get zero channels up to it, a width tensor-core kernels take.
NARROW_CHANNELS = 8


class GpuConv:
    """``act(conv(pad(x)) + bias)`` through ``F.conv2d`` with a folded weight.

    ``fused_layout`` (off by default): a reflect padding, the cast to the compute dtype and, for a
    narrow convolution, zero input channels are one Triton pass (``lama_fast.kernels.layout``), and a
    narrow convolution runs with its channels padded to ``NARROW_CHANNELS`` (zero weights: the same
    sums), its extra output channels dropped.
    """

    def __init__(self, conv: Conv, device, dtype) -> None:
        self.weight = _place(conv.weight, device, dtype, torch.channels_last)
        self.bias = _place(conv.bias, device, dtype)
        self.stride, self.conv_padding, self.dilation = conv.stride, conv.conv_padding, conv.dilation
        self.explicit_padding = conv.explicit_padding
        self.padding_mode = conv.padding_mode
        self.activation = conv.activation
        self.dtype = dtype
        self.output = conv.output
        self.fused_layout = False
        self._padded: Optional[tuple] = None
        self._float32: Optional[tuple] = None  # (weight, bias) in float32, once set_dtype is called

    def set_dtype(self, dtype: torch.dtype) -> None:
        """Compute in ``dtype`` from now on (the weights are kept in float32 besides, so that going back is exact)."""
        if self._float32 is None:
            self._float32 = (self.weight.float(), None if self.bias is None else self.bias.float())
        weight, bias = self._float32
        self.weight = weight.to(dtype).contiguous(memory_format=torch.channels_last)
        self.bias = None if bias is None else bias.to(dtype)
        self.dtype, self._padded = dtype, None

    def padded_weights(self) -> tuple:
        """(weight, bias) with input and output channels padded with zeros to ``NARROW_CHANNELS``."""
        if self._padded is None:
            cout, cin = self.weight.shape[:2]
            pad_in, pad_out = max(0, NARROW_CHANNELS - cin), max(0, NARROW_CHANNELS - cout)
            weight = F.pad(self.weight, (0, 0, 0, 0, 0, pad_in, 0, pad_out)).contiguous(memory_format=torch.channels_last)
            bias = None if self.bias is None else F.pad(self.bias, (0, pad_out))
            self._padded = (weight, bias)
        return self._padded

    def __call__(self, x: torch.Tensor, other: Optional[torch.Tensor] = None, activation: Optional[str] = None):
        weight, bias = self.weight, self.bias
        if self.fused_layout:
            weight, bias = self.padded_weights()
            reflect = self.explicit_padding is not None and self.padding_mode == "reflect"
            if reflect or weight.shape[1] != x.shape[1]:
                from lama_fast.kernels.layout import reflect_pad_nhwc

                x = reflect_pad_nhwc(to_channels_last(x), self.explicit_padding if reflect else (0, 0, 0, 0),
                                     self.dtype, weight.shape[1])
            else:
                x = x.to(self.dtype)
            if self.explicit_padding is not None and not reflect:
                x = F.pad(x, self.explicit_padding, mode=self.padding_mode)
        else:
            x = x.to(self.dtype)
            if self.explicit_padding is not None:
                x = F.pad(x, self.explicit_padding, mode=self.padding_mode)
        out = F.conv2d(to_channels_last(x), weight, bias, self.stride, self.conv_padding, self.dilation)
        if out.shape[1] != self.weight.shape[0]:
            out = out[:, : self.weight.shape[0]]
        if other is not None:
            out = out.add_(other)
        return activate(out, activation if activation is not None else self.activation)


class GpuConvTranspose:
    """A transposed convolution with folded BatchNorm and an activation."""

    def __init__(self, conv: ConvTranspose, device, dtype) -> None:
        self.weight = _place(conv.weight, device, dtype, torch.channels_last)
        self.bias = _place(conv.bias, device, dtype)
        self.stride, self.padding = conv.stride, conv.padding
        self.output_padding, self.dilation = conv.output_padding, conv.dilation
        self.activation = conv.activation
        self.dtype = dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(to_channels_last(x.to(self.dtype)), self.weight, self.bias,
                                 self.stride, self.padding, self.output_padding, 1, self.dilation)
        return activate(out, self.activation)


# "cuda-emulated": the CUDA op's pipeline run on the CPU (lama_fast::cuda_emulated_spectral_transform), how the
# cuda backend's generator is checked on a machine without a GPU.
SPECTRAL_IMPLEMENTATIONS = ("triton", "cuda", "cuda-emulated")


class GpuSpectral:
    """The spectral transform as one op, with weights folded by ``lama_fast.rewrite.fold_spectral``: the
    Triton op (``implementation="triton"``), the CUDA extension's ``lama_fast::spectral_transform`` ("cuda") or
    its pipeline emulated on the CPU ("cuda-emulated")."""

    def __init__(self, spectral: Spectral, device, dtype, implementation: str = "triton") -> None:
        if implementation not in SPECTRAL_IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {SPECTRAL_IMPLEMENTATIONS}, got {implementation!r}")
        self.implementation = implementation
        self.w1, self.b1 = _place(spectral.w1, device, dtype), _place(spectral.b1, device, dtype)
        self.w_freq, self.b_freq = _place(spectral.w_freq, device, dtype), _place(spectral.b_freq, device, dtype)
        self.w2 = _place(spectral.w2, device, dtype)
        self.fft_norm = spectral.fft_norm
        self.downsample = spectral.downsample
        self.dtype = dtype
        self.route = "auto"
        self.fp32_dot = "ieee"
        # GpuGenerator.set_compiled: ``run`` wrapped by torch.compiler.disable, so that the op stays out of
        # torch.compile's graphs (runs as it is, between two of them); None otherwise.
        self.opaque: Optional[Any] = None

    def __call__(self, x: torch.Tensor, bias: Optional[torch.Tensor], other: Optional[torch.Tensor],
                 relu: bool) -> torch.Tensor:
        if self.opaque is not None:
            return self.opaque(x, bias, other, relu)
        return self.run(x, bias, other, relu)

    def run(self, x: torch.Tensor, bias: Optional[torch.Tensor], other: Optional[torch.Tensor],
            relu: bool) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.downsample:
            x = F.avg_pool2d(x, kernel_size=2, stride=2)
        if self.implementation != "triton":
            op = (torch.ops.lama_fast.spectral_transform if self.implementation == "cuda"
                  else torch.ops.lama_fast.cuda_emulated_spectral_transform)
            return op(x, self.w1, self.b1, self.w_freq, self.b_freq, self.w2, bias, other, relu, self.fft_norm)
        return torch.ops.lama_fast.triton_spectral_transform(
            x, self.w1, self.b1, self.w_freq, self.b_freq, self.w2, bias, other, relu, self.fft_norm, self.route,
            self.fp32_dot)


class GpuFFC:
    """One FFC layer (``lama_fast.rewrite.FFC``) on the device.

    With both a local and a global input, the two convolutions of the local input (l2l, l2g)
    run as one convolution with the output channels of both: the local half gets g2l's output
    added in place, the global half goes to the spectral op as its ``other`` term.
    """

    def __init__(self, ffc: FFC, device, dtype, spectral: str = "triton") -> None:
        def conv(c: Optional[Conv]) -> Optional[GpuConv]:
            return None if c is None else GpuConv(c, device, dtype)

        self.l2l, self.g2l, self.l2g, self.merged = conv(ffc.l2l), conv(ffc.g2l), conv(ffc.l2g), conv(ffc.merged)
        self.local_pair = None
        if ffc.l2l is not None and ffc.l2g is not None and same_geometry(ffc.l2l, ffc.l2g):
            self.local_pair = GpuConv(stack_convs(ffc.l2l, ffc.l2g), device, dtype)
        self.spectral = None if ffc.spectral is None else GpuSpectral(ffc.spectral, device, dtype, spectral)
        self.bias_g = _place(ffc.bias_g, device, dtype)
        self.act_l, self.act_g, self.split = ffc.act_l, ffc.act_g, ffc.split

    def __call__(self, x: Branches) -> Branches:
        x_l, x_g = x
        if self.merged is not None:
            both = self.merged(x_l, None, self.act_l)
            return both[:, : self.split], both[:, self.split:]
        if self.local_pair is not None:
            both = self.local_pair(x_l)
            cl = self.l2l.weight.shape[0]
            local = both[:, :cl]
            if self.g2l is not None:
                local.add_(self.g2l(x_g))
            local = activate(local, self.act_l)
            glob_in = both[:, cl:]
            if self.spectral is not None:
                return local, self.spectral(x_g, None, glob_in, self.act_g == "relu")
            return local, activate(glob_in, self.act_g)
        local = None
        if self.l2l is not None:
            other = self.g2l(x_g) if self.g2l is not None else None
            local = self.l2l(x_l, other, self.act_l)
        elif self.g2l is not None:
            local = self.g2l(x_g, None, self.act_l)
        return local, global_output(self.spectral, self.l2g, x_l, x_g, self.bias_g, self.act_g)


class GpuGenerator(nn.Module):
    """Inference-only LaMa generator on a GPU (or on the CPU under Triton's interpreter)."""

    def __init__(self, stages: List[Any], device: torch.device, compute_dtype: torch.dtype,
                 in_channels: Optional[int], config: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.stages = stages
        self.compute_dtype = compute_dtype
        self.io_dtype = torch.float32
        self.in_channels = in_channels
        self.config = config
        # Inpainter reads the device and dtype of its generator's inputs from here.
        self.register_buffer("_io_marker", torch.zeros((), dtype=self.io_dtype, device=device), persistent=False)
        # On CUDA, each input shape is captured once as a CUDA graph and replayed (lama_fast.gpu.graphs).
        self.use_cuda_graphs = device.type == "cuda"
        self.graphs = GraphCache(max_graphs=4)
        self._compiled: Optional[Any] = None

    @property
    def graph_error(self) -> Optional[str]:
        """Why capturing a CUDA graph failed (the forward then runs without graphs), or None."""
        return self.graphs.error

    def extra_repr(self) -> str:
        return f"device={self._io_marker.device}, compute_dtype={self.compute_dtype}, stages={len(self.stages)}"

    def spectral_ops(self) -> List[GpuSpectral]:
        """Every spectral transform of the model, in order."""
        return [ffc.spectral for ffc in ffc_layers(self.stages) if ffc.spectral is not None]

    def set_fp32_dot(self, fp32_dot: str) -> None:
        """How the spectral ops' float32 dots run: "ieee" (exact float32) or "tf32x3" (3xTF32 on tensor cores)."""
        for op in self.spectral_ops():
            op.fp32_dot = fp32_dot
        self.graphs.clear()

    def convolutions(self) -> List[GpuConv]:
        """Every convolution of the model (not the transposed ones), in order."""
        found = [stage for stage in self.stages if isinstance(stage, GpuConv)]
        for ffc in ffc_layers(self.stages):
            found += [c for c in (ffc.l2l, ffc.g2l, ffc.l2g, ffc.merged, ffc.local_pair) if c is not None]
        return found

    def set_layout(self, fused: bool, output_dtype: Optional[torch.dtype] = None) -> None:
        """``fused``: reflect pads, casts and narrow convolutions' channel padding as one Triton pass each,
        narrow convolutions padded to 8 channels (see ``GpuConv``); off by default. ``output_dtype``: the
        output convolution's dtype (default float32; the compute dtype runs it on tensor cores, less exactly)."""
        if fused:
            from lama_fast.kernels.layout import reflect_pad_nhwc  # noqa: F401  (triton must import)
        for conv in self.convolutions():
            conv.fused_layout = bool(fused)
            if conv.output:
                conv.set_dtype(torch.float32 if output_dtype is None else output_dtype)
        self.graphs.clear()

    def set_compiled(self, compiled: bool) -> None:
        """``compiled``: the stages run through ``torch.compile`` (inductor, static shapes) with every spectral
        op left out of it (each one a graph break), so that the pads, casts, adds and ReLUs around the
        convolutions fuse into generated kernels. Each new input shape compiles first (tens of seconds; past
        torch._dynamo's recompile limit a shape runs uncompiled). Off by default."""
        self._compiled = torch.compile(self._stages, dynamic=False) if compiled else None
        for op in self.spectral_ops():
            op.opaque = torch.compiler.disable(op.run) if compiled else None
        self.graphs.clear()

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def set_route(self, route: str) -> None:
        """Force the Fourier units' route: "auto" (by map size), "fft" (cuFFT), "dft" (DFT matrices) or "dft-tc"
        (DFT matrices on tensor cores). The triton backend's op only."""
        for op in self.spectral_ops():
            op.route = route
        self.graphs.clear()

    def precision(self, height: int, width: int) -> Dict[str, Any]:
        """What runs in which precision for an input of ``height`` x ``width``."""
        downsampling = (self.config or {}).get("n_downsampling", 3)
        factor = 2 ** downsampling
        tf32 = torch.backends.cudnn.allow_tf32
        conv = str(self.compute_dtype).replace("torch.", "")
        if self.compute_dtype == torch.float32:
            conv += " (cuDNN, TF32 " + ("allowed: torch.backends.cudnn.allow_tf32" if tf32 else "off") + ")"
        route = self.spectral_ops()[0].route if self.spectral_ops() else "auto"
        fp32_dot = self.spectral_ops()[0].fp32_dot if self.spectral_ops() else "ieee"
        ops = self.spectral_ops()
        if not ops:
            spectral = None
        elif ops[0].implementation != "triton":
            from lama_fast.backends.cuda import cuda_precision_of

            spectral = cuda_precision_of(self.compute_dtype)
        else:
            from lama_fast.kernels.spectral import precision_of

            spectral = precision_of(self.compute_dtype, height // factor, width // factor, route, fp32_dot)
        output = [c.dtype for c in self.convolutions() if c.output]
        return {"convolutions": conv + (" (torch.compile: inductor around cuDNN)" if self.compiled else ""),
                "output_convolution": str(output[0] if output else torch.float32).replace("torch.", ""),
                "spectral_transform": spectral,
                "layout": "fused (Triton reflect pads, narrow convolutions padded to 8 channels)"
                if any(c.fused_layout for c in self.convolutions()) else "PyTorch"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x, self.in_channels)
        if x.device != self._io_marker.device:
            raise ValueError(f"this generator runs on {self._io_marker.device}, got a tensor on {x.device}")
        with torch.no_grad():
            if self.use_cuda_graphs and x.is_cuda and not torch.cuda.is_current_stream_capturing():
                return self._replay(x)
            return self._run(x)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        # cuDNN picks its convolution algorithms by timing them once per shape (benchmark mode).
        with torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False,
                                        allow_tf32=torch.backends.cudnn.allow_tf32):
            out = to_channels_last(x.to(self.compute_dtype))
            out = (self._compiled or self._stages)(out)
            return out.to(self.io_dtype).contiguous()

    def _stages(self, out: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            out = stage(out)
        return out

    def _replay(self, x: torch.Tensor) -> torch.Tensor:
        return self.graphs.run(self._run, x, (torch.backends.cudnn.allow_tf32,
                                              torch.backends.cuda.matmul.allow_tf32))

    def release_graphs(self) -> None:
        """Drop the captured CUDA graphs and the memory they hold."""
        self.graphs.clear()


def build_gpu_generator(generator: nn.Module, device: torch.device, dtype: torch.dtype,
                        spectral: str = "triton") -> GpuGenerator:
    """Fold and place ``generator`` (reference or original code) for the triton backend
    (``spectral="triton"``) or the cuda backend (``spectral="cuda"``: the extension's op; "cuda-emulated":
    its pipeline on the CPU)."""
    if spectral not in SPECTRAL_IMPLEMENTATIONS:
        raise ValueError(f"spectral must be one of {SPECTRAL_IMPLEMENTATIONS}, got {spectral!r}")
    records = fold_pads(iter_records(generator), lambda pad, stage: True)
    device = torch.device(device)
    stages = build_stages(
        records,
        ffc=lambda record: GpuFFC(record, device, dtype, spectral),
        conv=lambda record: GpuConv(record, device, torch.float32 if record.output else dtype),
        transpose=lambda record: GpuConvTranspose(record, device, dtype),
    )
    if spectral == "triton":
        # The Triton ops register on import.
        import lama_fast.kernels.spectral  # noqa: F401
    else:
        from .._build import extension_reasons  # importing lama_fast._C registers its ops

        reasons = extension_reasons()
        if reasons:
            raise RuntimeError(f"the {spectral} spectral op needs lama_fast._C: {'; '.join(reasons)}")

    return GpuGenerator(stages, device, dtype, input_channels(generator), getattr(generator, "config", None))
