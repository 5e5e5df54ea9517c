"""The generator placed on a GPU: folded cuDNN convolutions and the Triton spectral transform.

The layers are folded by the cpu backend's converter in float64 (no oneDNN
packing at that dtype), then each folded weight is moved to the device in the
compute dtype.  Activations are channels-last; float16/bfloat16 models take
float32 in and give float32 out, with the output convolution in float32.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..fast.convert import _Pad, conv_followers, convert_ffc_layer, plain_stage
from ..fast.fold import UnsupportedModelError, fold_batchnorm
from ..fast.layers import FastFFC, FusedSpectral, PackedConv, activate
from .graphs import GraphCache

CHANNELS_LAST = torch.channels_last
Branches = Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]


def _activate(x: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    if activation == "relu":
        return F.relu(x)
    if activation == "sigmoid":
        return torch.sigmoid(x)
    if activation == "tanh":
        return torch.tanh(x)
    return x


class GpuConv:
    """``act(conv(pad(x)) + bias)`` through ``F.conv2d`` with a folded weight."""

    def __init__(self, weight: torch.Tensor, bias: Optional[torch.Tensor], device, dtype, stride=(1, 1),
                 conv_padding=(0, 0), dilation=(1, 1), explicit_padding=None, padding_mode: str = "zeros",
                 activation: Optional[str] = None) -> None:
        self.weight = weight.detach().to(device=device, dtype=dtype).contiguous(memory_format=CHANNELS_LAST)
        self.bias = None if bias is None else bias.detach().to(device=device, dtype=dtype)
        self.stride, self.conv_padding, self.dilation = tuple(stride), tuple(conv_padding), tuple(dilation)
        self.explicit_padding = explicit_padding
        self.padding_mode = padding_mode
        self.activation = activation
        self.dtype = dtype

    @classmethod
    def from_packed(cls, conv: PackedConv, device, dtype, activation: Optional[str] = None) -> "GpuConv":
        """The device copy of a float64 ``PackedConv`` made by the cpu backend's converter."""
        if conv.weight is None:
            raise UnsupportedModelError("the converter packed this convolution's weight (float64 expected)")
        return cls(conv.weight, conv.bias, device, dtype, conv.stride, conv.conv_padding, conv.dilation,
                   conv.explicit_padding, conv.padding_mode, activation)

    def __call__(self, x: torch.Tensor, activation: Optional[str] = None, other: Optional[torch.Tensor] = None):
        x = x.to(self.dtype)
        if self.explicit_padding is not None:
            x = F.pad(x, self.explicit_padding, mode=self.padding_mode)
        out = F.conv2d(x.contiguous(memory_format=CHANNELS_LAST), self.weight, self.bias, self.stride,
                       self.conv_padding, self.dilation)
        if other is not None:
            out = out.add_(other)
        return _activate(out, activation if activation is not None else self.activation)


class GpuConvTranspose:
    """A transposed convolution with folded BatchNorm and an activation."""

    def __init__(self, layer: nn.ConvTranspose2d, weight, bias, device, dtype, activation) -> None:
        self.weight = weight.to(device=device, dtype=dtype).contiguous(memory_format=CHANNELS_LAST)
        self.bias = None if bias is None else bias.to(device=device, dtype=dtype)
        self.stride, self.padding = layer.stride, layer.padding
        self.output_padding, self.dilation = layer.output_padding, layer.dilation
        self.activation = activation
        self.dtype = dtype

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(x.to(self.dtype).contiguous(memory_format=CHANNELS_LAST), self.weight, self.bias,
                                 self.stride, self.padding, self.output_padding, 1, self.dilation)
        return _activate(out, self.activation)


SPECTRAL_IMPLEMENTATIONS = ("triton", "cuda")


class GpuSpectral:
    """The spectral transform as one op, with weights folded by ``fuse_spectral``: the Triton op
    (``implementation="triton"``) or the CUDA extension's ``lama_fast::spectral_transform``."""

    def __init__(self, fused: FusedSpectral, device, dtype, implementation: str = "triton") -> None:
        if implementation not in SPECTRAL_IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {SPECTRAL_IMPLEMENTATIONS}, got {implementation!r}")
        self.implementation = implementation
        def place(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(device=device, dtype=dtype).contiguous()

        self.w1, self.b1 = place(fused.w1), place(fused.b1)
        self.w_freq, self.b_freq = place(fused.w_freq), place(fused.b_freq)
        self.w2 = place(fused.w2)
        self.fft_norm = fused.fft_norm
        self.downsample = fused.downsample
        self.dtype = dtype
        self.route = "auto"
        self.fp32_dot = "ieee"

    def __call__(self, x: torch.Tensor, bias: Optional[torch.Tensor], other: Optional[torch.Tensor],
                 relu: bool) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.downsample:
            x = F.avg_pool2d(x, kernel_size=2, stride=2)
        if self.implementation == "cuda":
            return torch.ops.lama_fast.spectral_transform(x, self.w1, self.b1, self.w_freq, self.b_freq, self.w2, bias,
                                                          other, relu, self.fft_norm)
        return torch.ops.lama_fast.triton_spectral_transform(
            x, self.w1, self.b1, self.w_freq, self.b_freq, self.w2, bias, other, relu, self.fft_norm, self.route,
            self.fp32_dot)


def _same_geometry(a: PackedConv, b: PackedConv) -> bool:
    return (a.kernel_size == b.kernel_size and a.stride == b.stride and a.dilation == b.dilation
            and a.conv_padding == b.conv_padding and a.explicit_padding == b.explicit_padding
            and a.padding_mode == b.padding_mode)


class GpuFFC:
    """One FFC layer (``FastFFC``'s arithmetic) on the device.

    With both a local and a global input, the two convolutions of the local input (l2l, l2g)
    run as one convolution with the output channels of both: the local half gets g2l's output
    added in place, the global half goes to the spectral op as its ``other`` term.
    """

    def __init__(self, ffc: FastFFC, device, dtype, spectral: str = "triton") -> None:
        def conv(c: Optional[PackedConv]) -> Optional[GpuConv]:
            return None if c is None else GpuConv.from_packed(c, device, dtype)

        self.l2l, self.g2l, self.l2g, self.merged = conv(ffc.l2l), conv(ffc.g2l), conv(ffc.l2g), conv(ffc.merged)
        self.local_pair = None
        if ffc.l2l is not None and ffc.l2g is not None and _same_geometry(ffc.l2l, ffc.l2g):
            bias_l = ffc.l2l.bias if ffc.l2l.bias is not None else torch.zeros(ffc.l2l.out_channels,
                                                                                dtype=torch.float64)
            bias_g = ffc.l2g.bias if ffc.l2g.bias is not None else torch.zeros(ffc.l2g.out_channels,
                                                                                dtype=torch.float64)
            self.local_pair = GpuConv(torch.cat((ffc.l2l.weight, ffc.l2g.weight)), torch.cat((bias_l, bias_g)),
                                      device, dtype, ffc.l2l.stride, ffc.l2l.conv_padding, ffc.l2l.dilation,
                                      ffc.l2l.explicit_padding, ffc.l2l.padding_mode)
        self.spectral = None if ffc.spectral is None else GpuSpectral(ffc.spectral, device, dtype, spectral)
        self.bias_g = None if ffc.bias_g is None else ffc.bias_g.detach().to(device=device, dtype=dtype)
        self.act_l, self.act_g, self.split = ffc.act_l, ffc.act_g, ffc.split

    def __call__(self, x) -> Branches:
        x_l, x_g = x if isinstance(x, tuple) else (x, None)
        if self.merged is not None:
            both = self.merged(x_l, self.act_l)
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
        local = glob = None
        if self.l2l is not None:
            other = self.g2l(x_g) if self.g2l is not None else None
            local = self.l2l(x_l, self.act_l, other)
        elif self.g2l is not None:
            local = self.g2l(x_g, self.act_l)
        if self.spectral is not None:
            other = self.l2g(x_l) if self.l2g is not None else None
            bias = None if self.l2g is not None else self.bias_g
            glob = self.spectral(x_g, bias, other, self.act_g == "relu")
        elif self.l2g is not None:
            glob = self.l2g(x_l, self.act_g)
        return local, glob


class _ResBlock:
    def __init__(self, first: GpuFFC, second: GpuFFC) -> None:
        self.first, self.second = first, second

    def __call__(self, x) -> Branches:
        x = x if isinstance(x, tuple) else (x, None)
        out = self.second(self.first(x))
        return tuple(a if b is None else (b if a is None else b.add_(a)) for a, b in zip(x, out))


def _concat(x):
    if not isinstance(x, tuple):
        return x
    x_l, x_g = x
    if x_g is None or x_l is None:
        return x_l if x_g is None else x_g
    return torch.cat((x_l, x_g), dim=1).contiguous(memory_format=CHANNELS_LAST)


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

    @property
    def graph_error(self) -> Optional[str]:
        """Why capturing a CUDA graph failed (the forward then runs without graphs), or None."""
        return self.graphs.error

    def extra_repr(self) -> str:
        return f"device={self._io_marker.device}, compute_dtype={self.compute_dtype}, stages={len(self.stages)}"

    def spectral_ops(self) -> List[GpuSpectral]:
        """Every spectral transform of the model, in order."""
        found = []
        for stage in self.stages:
            ffcs = [stage.first, stage.second] if isinstance(stage, _ResBlock) else [stage]
            found += [f.spectral for f in ffcs if isinstance(f, GpuFFC) and f.spectral is not None]
        return found

    def set_fp32_dot(self, fp32_dot: str) -> None:
        """How the spectral ops' float32 dots run: "ieee" (exact float32) or "tf32x3" (3xTF32 on tensor cores)."""
        for op in self.spectral_ops():
            op.fp32_dot = fp32_dot
        self.graphs.clear()

    def set_route(self, route: str) -> None:
        """Force the Fourier units' route: "auto" (by map size), "fft" (cuFFT) or "dft" (DFT matrices)."""
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
        elif ops[0].implementation == "cuda":
            from lama_fast.ops.spectral import cuda_precision_of

            spectral = cuda_precision_of(self.compute_dtype)
        else:
            from lama_fast.kernels.spectral import precision_of

            spectral = precision_of(self.compute_dtype, height // factor, width // factor, route, fp32_dot)
        return {"convolutions": conv, "output_convolution": "float32", "spectral_transform": spectral}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(x) or x.dim() != 4:
            raise ValueError(f"expected an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
        if self.in_channels is not None and x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
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
            out = x.to(self.compute_dtype).contiguous(memory_format=CHANNELS_LAST)
            for stage in self.stages:
                out = stage(out)
            return out.to(self.io_dtype).contiguous()

    def _replay(self, x: torch.Tensor) -> torch.Tensor:
        return self.graphs.run(self._run, x, (torch.backends.cudnn.allow_tf32,
                                              torch.backends.cuda.matmul.allow_tf32))

    def release_graphs(self) -> None:
        """Drop the captured CUDA graphs and the memory they hold."""
        self.graphs.clear()


def _fold_pad(stages: List[Any]) -> List[Any]:
    """A reflect/replicate pad just before an unpadded convolution becomes that convolution's padding."""
    folded: List[Any] = []
    for stage in stages:
        conv = stage if isinstance(stage, GpuConv) else None
        if (isinstance(stage, GpuFFC) and stage.l2l is not None and stage.g2l is None and stage.l2g is None
                and stage.spectral is None):
            conv = stage.l2l
        if (conv is not None and conv.explicit_padding is None and conv.conv_padding == (0, 0) and folded
                and isinstance(folded[-1], _Pad)):
            pad = folded.pop()
            conv.explicit_padding, conv.padding_mode = pad.padding, pad.mode
        folded.append(stage)
    return folded


def build_gpu_generator(generator: nn.Module, device: torch.device, dtype: torch.dtype,
                        spectral: str = "triton") -> GpuGenerator:
    """Fold and place ``generator`` (reference or original code) for the triton backend
    (``spectral="triton"``) or the cuda backend (``spectral="cuda"``: the extension's op)."""
    if spectral not in SPECTRAL_IMPLEMENTATIONS:
        raise ValueError(f"spectral must be one of {SPECTRAL_IMPLEMENTATIONS}, got {spectral!r}")
    if any(t.device.type != "cpu" for t in list(generator.parameters()) + list(generator.buffers())):
        # The folds combine the layers' tensors with CPU ones (a missing norm's unit scale).
        generator = copy.deepcopy(generator).cpu()
    layers = list(getattr(generator, "model", []))
    if not layers:
        raise UnsupportedModelError(f"{type(generator).__name__} has no 'model' Sequential of LaMa layers")
    device = torch.device(device)
    last_conv = max((j for j, m in enumerate(layers) if isinstance(m, nn.Conv2d)), default=-1)
    stages: List[Any] = []
    i = 0
    while i < len(layers):
        layer, where = layers[i], f"model.{i}"
        if hasattr(layer, "ffc"):
            stages.append(GpuFFC(convert_ffc_layer(layer, torch.float64, where, "direct"), device, dtype, spectral))
        elif hasattr(layer, "conv1") and hasattr(layer, "conv2") and hasattr(layer.conv1, "ffc"):
            if getattr(layer, "inline", False):
                raise UnsupportedModelError(f"{where}: inline residual blocks are not supported")
            stages.append(_ResBlock(
                GpuFFC(convert_ffc_layer(layer.conv1, torch.float64, where + ".conv1", "direct"), device, dtype,
                       spectral),
                GpuFFC(convert_ffc_layer(layer.conv2, torch.float64, where + ".conv2", "direct"), device, dtype,
                       spectral)))
        elif type(layer).__name__ == "ConcatTupleLayer":
            stages.append(_concat)
        elif isinstance(layer, (nn.ConvTranspose2d, nn.Conv2d)):
            scale, shift, activation, consumed = conv_followers(layers, i)
            if layer.groups != 1:
                raise UnsupportedModelError(f"{where}: grouped convolutions are not supported")
            if isinstance(layer, nn.ConvTranspose2d):
                weight, bias = fold_batchnorm(layer.weight, layer.bias, scale, shift, out_dim=1)
                stages.append(GpuConvTranspose(layer, weight, bias, device, dtype, activation))
            else:
                if isinstance(layer.padding, str):
                    raise UnsupportedModelError(f"{where}: string padding {layer.padding!r} is not supported")
                weight, bias = fold_batchnorm(layer.weight, layer.bias, scale, shift)
                conv_dtype = torch.float32 if i == last_conv else dtype
                pad_h, pad_w = layer.padding
                explicit = None
                if layer.padding_mode != "zeros" and (pad_h or pad_w):
                    explicit, conv_padding = (pad_w, pad_w, pad_h, pad_h), (0, 0)
                else:
                    conv_padding = (pad_h, pad_w)
                stages.append(GpuConv(weight, bias, device, conv_dtype, layer.stride, conv_padding, layer.dilation,
                                      explicit, layer.padding_mode, activation))
            i += consumed
            continue
        else:
            stages.extend(plain_stage(layer, where))
        i += 1
    if spectral == "triton":
        # The Triton ops register on import.
        import lama_fast.kernels.spectral  # noqa: F401

    first = next((m for m in generator.modules() if isinstance(m, nn.Conv2d)), None)
    return GpuGenerator(_fold_pad(stages), device, dtype, first.in_channels if first is not None else None,
                        getattr(generator, "config", None))
