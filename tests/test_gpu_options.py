"""The GPU generator's opt-in variants against PyTorch's reflect padding in float64 and the golden vectors: the
Triton layout kernel (lama_fast.kernels.layout) and the fused layout (set_layout), the compiled stages
(set_compiled).

Without a GPU these run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), where bfloat16
loads and stores are wrong: bfloat16 is checked on a GPU only.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import lama_fast
from lama_fast.kernels import triton_reasons
from model_cases import golden_batch, golden_generator

TRITON_REASONS = triton_reasons()
pytestmark = pytest.mark.skipif(bool(TRITON_REASONS), reason=f"triton unavailable: {'; '.join(TRITON_REASONS)}")
ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if not INTERPRETED else [])

if not TRITON_REASONS:
    from lama_fast.kernels.layout import reflect_pad_nhwc


def padded_reference(x: torch.Tensor, padding, dtype: torch.dtype, channels: int) -> torch.Tensor:
    """F.pad in float64, zero channels appended, then rounded once to ``dtype``."""
    want = F.pad(x.double(), padding, mode="reflect")
    extra = want.new_zeros(want.shape[0], channels - want.shape[1], *want.shape[2:])
    return torch.cat([want, extra], 1).to(dtype)


CASES = [  # (n, c, h, w), (left, right, top, bottom), channels (None: the input's)
    ((2, 5, 7, 9), (3, 3, 3, 3), None),
    ((1, 4, 11, 6), (1, 2, 0, 3), 8),
    ((1, 3, 5, 5), (0, 0, 0, 0), 8),
    ((1, 70, 4, 3), (1, 1, 1, 1), 72),  # two channel blocks
    ((3, 1, 2, 2), (1, 1, 1, 1), None),
]


@pytest.mark.parametrize("shape, padding, channels", CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_reflect_pad_matches_pytorch(shape, padding, channels, dtype):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=gen).to(DEVICE).contiguous(memory_format=torch.channels_last)
    got = reflect_pad_nhwc(x, padding, dtype, channels)
    want = padded_reference(x.cpu(), padding, dtype, channels or shape[1])
    assert got.dtype == dtype and got.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(got.cpu(), want)  # a copy and one rounding: exact


def test_reflect_pad_reads_channel_slices_and_nchw_tensors():
    x = torch.randn(2, 12, 6, 7).to(DEVICE).contiguous(memory_format=torch.channels_last)
    part = x[:, 4:9]  # rows of channels with unit stride, 12 apart
    assert torch.equal(reflect_pad_nhwc(part, (2, 1, 1, 2)).cpu(), padded_reference(part.cpu(), (2, 1, 1, 2),
                                                                                    torch.float32, 5))
    nchw = x.contiguous()
    assert torch.equal(reflect_pad_nhwc(nchw, (1, 1, 1, 1)).cpu(), padded_reference(nchw.cpu(), (1, 1, 1, 1),
                                                                                    torch.float32, 12))


def test_reflect_pad_refuses_bad_arguments():
    x = torch.zeros(1, 3, 4, 5, device=DEVICE)
    with pytest.raises(ValueError, match=r"^reflect padding \(0, 5, 1, 1\) must be at least 0 and smaller than "
                                         r"the input's 4x5 sides$"):
        reflect_pad_nhwc(x, (0, 5, 1, 1))
    with pytest.raises(ValueError, match=r"^channels \(2\) must be at least the input's \(3\)$"):
        reflect_pad_nhwc(x, (1, 1, 1, 1), channels=2)
    with pytest.raises(ValueError, match=r"^reflect_pad_nhwc takes a 4-D \(N, C, H, W\) tensor, got 3 dimensions$"):
        reflect_pad_nhwc(x[0], (1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"torch.float64 -> torch.float32$"):
        reflect_pad_nhwc(x.double(), (1, 1, 1, 1), torch.float32)


def test_fused_layout_generator_matches_golden(golden_dir, golden_case):
    case = golden_case("inpaint_case")
    fast = lama_fast.optimize(golden_generator(golden_dir, torch.float32), backend="triton", device=DEVICE)
    batch = golden_batch(case, torch.float32).to(DEVICE)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        plain = fast(batch)
        fast.set_layout(True)
        fused = fast(batch)
    convs = fast.convolutions()
    assert all(conv.fused_layout for conv in convs)
    narrow = [conv for conv in convs if min(conv.weight.shape[:2]) < 8]
    assert narrow and all(min(conv.padded_weights()[0].shape[:2]) == 8 for conv in narrow)
    assert fused.shape == plain.shape and fused.dtype == torch.float32
    assert (fused.double().cpu() - case["generator_output"]).abs().max().item() <= 2e-6
    assert fast.precision(*batch.shape[2:])["layout"].startswith("fused")
    fast.set_layout(False)
    assert torch.equal(fast(batch), plain)  # back to PyTorch's layout: the same numbers as before


def test_the_output_convolution_dtype_can_follow_the_compute_dtype(golden_dir, golden_case):
    case = golden_case("inpaint_case")
    fast = lama_fast.optimize(golden_generator(golden_dir, torch.float32), backend="triton", device=DEVICE,
                              dtype=torch.float16)
    batch = golden_batch(case, torch.float32).to(DEVICE)
    truth = case["generator_output"]  # float64; std 0.20, max 0.97
    before = fast(batch)
    fast.set_layout(True, output_dtype=torch.float16)
    assert fast.precision(*batch.shape[2:])["output_convolution"] == "float16"
    half = fast(batch)
    # The output convolution in float16 too: at most twice the float16 model's own error (1.1e-3 here), which is
    # itself within a few float16 epsilons (9.8e-4).
    own = (before.double().cpu() - truth).abs().max().item()
    assert own <= 4 * torch.finfo(torch.float16).eps
    assert (half.double().cpu() - truth).abs().max().item() <= 2 * own
    fast.set_layout(False)
    assert fast.precision(*batch.shape[2:])["output_convolution"] == "float32"
    assert torch.equal(fast(batch), before)


def test_compiled_stages_match_golden_and_break_only_at_the_spectral_ops(golden_dir, golden_case):
    import torch._dynamo
    from torch._dynamo.utils import counters

    case = golden_case("inpaint_case")
    fast = lama_fast.optimize(golden_generator(golden_dir, torch.float32), backend="triton", device=DEVICE)
    batch = golden_batch(case, torch.float32).to(DEVICE)
    plain = fast(batch)
    torch._dynamo.reset()
    counters.clear()
    fast.set_compiled(True)
    try:
        assert fast.compiled and all(op.opaque for op in fast.spectral_ops())
        compiled = fast(batch)
        breaks = dict(counters["graph_break"])
        assert counters["stats"]["unique_graphs"] >= 2
        assert breaks and all("GpuSpectral.run" in reason for reason in breaks), breaks
        assert (compiled.double().cpu() - case["generator_output"]).abs().max().item() <= 2e-6
        assert "torch.compile" in fast.precision(*batch.shape[2:])["convolutions"]
    finally:
        fast.set_compiled(False)
        torch._dynamo.reset()
    assert not fast.compiled and not any(op.opaque for op in fast.spectral_ops())
    assert torch.equal(fast(batch), plain)


def test_the_cuda_backends_generator_matches_golden_through_the_emulation(golden_dir, golden_case):
    """The cuda backend's generator (GpuGenerator with the CUDA op's pipeline, here emulated on the CPU)."""
    from lama_fast._build import extension_reasons
    from lama_fast.gpu.generator import build_gpu_generator

    if extension_reasons():
        pytest.skip("; ".join(extension_reasons()))
    case = golden_case("inpaint_case")
    fast = build_gpu_generator(golden_generator(golden_dir, torch.float32), torch.device("cpu"), torch.float32,
                               spectral="cuda-emulated")
    assert {op.implementation for op in fast.spectral_ops()} == {"cuda-emulated"}
    assert fast.precision(64, 64)["spectral_transform"]["fft"].startswith("float32 cuFFT")
    out = fast(golden_batch(case, torch.float32))
    assert out.dtype == torch.float32
    assert (out.double() - case["generator_output"]).abs().max().item() <= 2e-6
    fast.set_layout(True)  # the fused layout with the cuda backend's op
    assert (fast(golden_batch(case, torch.float32)).double() - case["generator_output"]).abs().max().item() <= 2e-6


@pytest.mark.parametrize("padding, mode", [((3, 3, 3, 3), "reflect"), ((1, 2, 0, 1), "constant"), (None, "zeros")])
@pytest.mark.parametrize("channels", [(4, 3), (16, 12)], ids=["narrow", "wide"])
def test_a_fused_convolution_gives_the_plain_ones_output(padding, mode, channels):
    from lama_fast.gpu.generator import GpuConv
    from lama_fast.rewrite import Conv

    cin, cout = channels
    gen = torch.Generator().manual_seed(cin * 10 + cout)
    record = Conv(weight=torch.randn(cout, cin, 7, 7, generator=gen, dtype=torch.float64),
                  bias=torch.randn(cout, generator=gen, dtype=torch.float64), conv_padding=(1, 1),
                  explicit_padding=padding, padding_mode=mode, activation="relu")
    conv = GpuConv(record, DEVICE, torch.float32)
    x = torch.randn(2, cin, 9, 11, generator=gen).to(DEVICE).contiguous(memory_format=torch.channels_last)
    plain = conv(x)
    conv.fused_layout = True
    fused = conv(x)
    if cin < 8:
        assert conv.padded_weights()[0].shape[:2] == (8, 8)
    assert fused.shape == plain.shape
    # Zero channels add exact zeros; the convolution may sum in another order.
    assert (fused - plain).abs().max().item() <= 1e-5 * max(1.0, plain.abs().max().item())


def test_the_dft_tc_route_matches_golden(golden_dir, golden_case):
    case = golden_case("inpaint_case")
    fast = lama_fast.optimize(golden_generator(golden_dir, torch.float32), backend="triton", device=DEVICE)
    fast.set_route("dft-tc")
    batch = golden_batch(case, torch.float32).to(DEVICE)
    assert fast.precision(*batch.shape[2:])["spectral_transform"]["fft"].startswith("DFT matrices on tensor cores")
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        out = fast(batch)
    # 3xTF32 products: within float32's tolerance of the golden output.
    assert (out.double().cpu() - case["generator_output"]).abs().max().item() <= 2e-6
