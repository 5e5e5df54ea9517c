"""Gradients of the compiled spectral ops: spectral_transform_masked / fourier_unit_masked, their backward ops and
the autograd formulas that the wrappers of lama_fast.ops.spectral use when x, bias or other requires grad.

The truth is torch.autograd through lama_fast.ops.reference (the ops' math in float64 PyTorch) and
torch.autograd.gradcheck (finite differences in float64).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lama_fast.ops.reference import (_conv1x1, fourier_unit_reference, plain_spectral_transform,
                                     spectral_transform_reference)
from op_cases import require_extension, shape_id

require_extension()

from lama_fast.ops import spectral  # noqa: E402  (after the skip: it needs the extension)

NORMS = ("ortho", "forward", "backward")
OPS = torch.ops.lama_fast
# (batch, Cin, Ch, Cout, H, W). Odd H and W; H = 67 and W = 134 (= 2 * 67) have a prime factor the op's own FFT
# does not plan and take ATen's FFT.
GRADCHECK_CASES = [(1, 6, 4, 5, 5, 7), (2, 8, 3, 6, 6, 9)]
ATEN_CASES = [(1, 3, 3, 4, 67, 2), (1, 3, 2, 4, 1, 134)]
# The ways to call the op: (relu, bias, other).
VARIANTS = [(False, False, False), (True, True, True), (True, False, True), (False, True, False)]
# Every pre-activation of a gradcheck case is at least this far from the ReLU's kink (gradcheck's eps is 1e-6).
KINK_MARGIN = 1e-4
# gradcheck's tolerances: its central differences in float64 are good to about 1e-8 on these cases.
GRADCHECK_TOLERANCE = dict(eps=1e-6, atol=1e-6, rtol=1e-5)
# Cases with more inputs than this are checked in gradcheck's fast mode (a random projection of the Jacobian,
# vJu, instead of all of it), which keeps the file's time down.
FULL_GRADCHECK_INPUTS = 500
# float32 gradients: at most twice plain PyTorch's float32 error, plus this.
FLOAT32_FLOOR = 1e-6


@pytest.fixture(autouse=True)
def one_thread():
    """The cases are tiny: one thread each (an oversubscribed machine makes ATen's and the op's thread pools
    slower than one thread by a factor of hundreds). test_threads_agree runs several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def own_fft(h: int, w: int) -> bool:
    """Whether the op's own FFT plans an h x w transform (every prime factor at most 64), else ATen's runs."""
    def friendly(n: int) -> bool:
        for p in range(2, 65):
            while n % p == 0:
                n //= p
        return n == 1

    return friendly(h) and friendly(w // 2 if w % 2 == 0 else w)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max()).item()


def make_case(case, seed: int, dtype=torch.float64):
    """x, the weights [w1, b1, w_freq, b_freq, w2], bias and other of a case, float64 draws cast to dtype."""
    batch, cin, ch, cout, h, w = case
    gen = torch.Generator().manual_seed(seed)

    def draw(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype)

    x = draw(batch, cin, h, w)
    weights = [draw(ch, cin, scale=cin ** -0.5), draw(ch, scale=0.3), draw(2 * ch, 2 * ch, scale=(2 * ch) ** -0.5),
               draw(2 * ch, scale=0.3), draw(cout, ch, scale=ch ** -0.5)]
    return x, weights, draw(cout, scale=0.5), draw(batch, cout, h, w)


def pre_activations(x, w1, b1, w_freq, b_freq, w2, bias, other, fft_norm):
    """The float64 inputs of the op's three ReLUs: y = x W1^T + b1, the frequency conv Z (interleaved channels,
    (N, 2Ch, H, Wf)) and out before its ReLU (NCHW)."""
    x, w1, b1, w_freq, b_freq, w2 = (t.double() for t in (x, w1, b1, w_freq, b_freq, w2))
    y_pre = _conv1x1(w1, x) + b1.view(1, -1, 1, 1)
    y = y_pre.relu()
    spectrum = torch.fft.rfft2(y, norm=fft_norm)
    n, c, h, wf = spectrum.shape
    interleaved = torch.view_as_real(spectrum).permute(0, 1, 4, 2, 3).reshape(n, 2 * c, h, wf)
    z_pre = _conv1x1(w_freq, interleaved) + b_freq.view(1, -1, 1, 1)
    mixed = z_pre.relu().view(n, c, 2, h, wf)
    z = torch.fft.irfft2(torch.complex(mixed[:, :, 0], mixed[:, :, 1]), s=(h, x.shape[-1]), norm=fft_norm)
    out_pre = _conv1x1(w2, y + z)
    if bias is not None:
        out_pre = out_pre + bias.double().view(1, -1, 1, 1)
    if other is not None:
        out_pre = out_pre + other.double()
    return y_pre, z_pre, out_pre


def kink_distance(x, weights, bias, other, relu, fft_norm) -> float:
    y_pre, z_pre, out_pre = pre_activations(x, *weights, bias, other, fft_norm)
    return min(t.abs().min().item() for t in ((y_pre, z_pre, out_pre) if relu else (y_pre, z_pre)))


def unpack(bits: torch.Tensor, rows: int, count: int) -> torch.Tensor:
    """Mask rows of whole bytes (least significant bit first) as a (rows, count) bool tensor."""
    data = bits.numpy().reshape(rows, -1)
    return torch.from_numpy(np.unpackbits(data, axis=1, bitorder="little")[:, :count].astype(bool))


# --- gradcheck -----------------------------------------------------------------------------


def gradcheck_spectral(case, norm, relu, use_bias, use_other, seed):
    # The first draw whose pre-activations all keep KINK_MARGIN from the ReLUs' kink.
    for attempt in range(20):
        x, weights, bias, other = make_case(case, seed + 1000 * attempt)
        bias = bias if use_bias else None
        other = other if use_other else None
        if kink_distance(x, weights, bias, other, relu, norm) > KINK_MARGIN:
            break
    else:
        raise AssertionError(f"no draw of {case} keeps {KINK_MARGIN} from the ReLUs' kink")
    inputs = [t.requires_grad_() for t in (x, bias, other) if t is not None]

    def fn(*args):
        it = iter(args)
        xi = next(it)
        bi = next(it) if use_bias else None
        oi = next(it) if use_other else None
        return spectral.spectral_transform(xi, *weights, bi, oi, relu, norm)

    fast = sum(t.numel() for t in inputs) > FULL_GRADCHECK_INPUTS
    assert torch.autograd.gradcheck(fn, tuple(inputs), fast_mode=fast, **GRADCHECK_TOLERANCE)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "relu%d-bias%d-other%d" % v)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=shape_id)
def test_gradcheck_spectral_transform(case, norm, variant):
    assert own_fft(case[4], case[5])
    gradcheck_spectral(case, norm, *variant, seed=sum(case) + NORMS.index(norm))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("case", ATEN_CASES, ids=shape_id)
def test_gradcheck_spectral_transform_aten_fft(case, norm):
    assert not own_fft(case[4], case[5])
    gradcheck_spectral(case, norm, True, True, True, seed=7)
    gradcheck_spectral(case, norm, False, False, False, seed=8)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("shape", [(1, 4, 5, 7), (2, 3, 6, 9), (1, 2, 67, 3), (1, 2, 1, 134)], ids=shape_id)
def test_gradcheck_fourier_unit(shape, norm):
    n, c, h, w = shape
    eye = torch.eye(c, dtype=torch.float64)
    for attempt in range(20):
        x, weights, _, _ = make_case((n, c, c, c, h, w), seed=h * w + 1000 * attempt)
        w_freq, b_freq = weights[2], weights[3]
        # y = relu(x): x > 0 everywhere keeps it linear.
        x = x.abs() + 0.1
        _, z_pre, _ = pre_activations(x, eye, torch.zeros(c, dtype=torch.float64), w_freq, b_freq, eye, None, None,
                                      norm)
        if z_pre.abs().min().item() > KINK_MARGIN:
            break
    else:
        raise AssertionError(f"no draw of {shape} keeps {KINK_MARGIN} from the ReLU's kink")
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: spectral.fourier_unit(t, w_freq, b_freq, norm), (x,),
                                    fast_mode=x.numel() > FULL_GRADCHECK_INPUTS, **GRADCHECK_TOLERANCE)


# --- float32 against float64 truth -----------------------------------------------------------


FLOAT32_CASES = [(1, 16, 12, 20, 24, 20), (2, 12, 8, 10, 9, 15), (1, 6, 5, 7, 67, 6)]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("case", FLOAT32_CASES, ids=shape_id)
def test_float32_gradients_within_twice_plain_pytorch(case, norm):
    x, weights, bias, other = make_case(case, seed=case[4] * case[5], dtype=torch.float32)
    grad = torch.randn(case[0], case[3], case[4], case[5], generator=torch.Generator().manual_seed(1))
    for relu in (True, False):
        leaves = [t.detach().clone().requires_grad_() for t in (x, bias, other)]
        out = spectral.spectral_transform(leaves[0], *weights, leaves[1], leaves[2], relu, norm)
        got = torch.autograd.grad(out, leaves, grad)

        truth_leaves = [t.detach().double().requires_grad_() for t in (x, bias, other)]
        want_out = spectral_transform_reference(truth_leaves[0], *weights, truth_leaves[1], truth_leaves[2], relu,
                                                norm)
        want = torch.autograd.grad(want_out, truth_leaves, grad.double())

        plain_leaves = [t.detach().clone().requires_grad_() for t in (x, bias, other)]
        plain_out = plain_spectral_transform(plain_leaves[0], *weights, plain_leaves[1], plain_leaves[2], relu, norm)
        plain = torch.autograd.grad(plain_out, plain_leaves, grad)

        for name, g, w, p in zip(("x", "bias", "other"), got, want, plain):
            ours, pytorch = relative_error(g, w), relative_error(p, w)
            assert g.dtype == torch.float32 and g.shape == w.shape
            assert ours <= 2 * pytorch + FLOAT32_FLOOR, (
                f"grad {name} (relu={relu}): our float32 error {ours:.3g}, PyTorch's float32 error {pytorch:.3g}")


def test_fourier_unit_float32_gradient():
    x, weights, _, _ = make_case((2, 10, 10, 10, 12, 14), seed=3, dtype=torch.float32)
    w_freq, b_freq = weights[2], weights[3]
    grad = torch.randn(2, 10, 12, 14, generator=torch.Generator().manual_seed(2))
    for norm in NORMS:
        leaf = x.clone().requires_grad_()
        got, = torch.autograd.grad(spectral.fourier_unit(leaf, w_freq, b_freq, norm), leaf, grad)
        truth = x.double().requires_grad_()
        want, = torch.autograd.grad(fourier_unit_reference(truth, w_freq, b_freq, norm), truth, grad.double())
        plain_leaf = x.clone().requires_grad_()
        plain_out = torch.fft.irfft2(_float32_mix(torch.fft.rfft2(plain_leaf, norm=norm), w_freq, b_freq),
                                     s=x.shape[-2:], norm=norm)
        plain, = torch.autograd.grad(plain_out, plain_leaf, grad)
        ours, pytorch = relative_error(got, want), relative_error(plain, want)
        assert ours <= 2 * pytorch + FLOAT32_FLOOR, f"{norm}: ours {ours:.3g}, PyTorch's float32 {pytorch:.3g}"


def _float32_mix(spectrum, w_freq, b_freq):
    n, c, h, wf = spectrum.shape
    interleaved = torch.view_as_real(spectrum).permute(0, 1, 4, 2, 3).reshape(n, 2 * c, h, wf)
    mixed = (_conv1x1(w_freq, interleaved) + b_freq.view(1, -1, 1, 1)).relu().view(n, c, 2, h, wf)
    return torch.complex(mixed[:, :, 0], mixed[:, :, 1])


# --- the masked forward ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("case", [(2, 6, 5, 7, 9, 10), (1, 5, 3, 4, 67, 5)], ids=shape_id)
def test_masked_forward_equals_plain(case, dtype):
    x, weights, bias, other = make_case(case, seed=5, dtype=dtype)
    for relu, use_bias, use_other in VARIANTS:
        b = bias if use_bias else None
        o = other if use_other else None
        for norm in NORMS:
            plain = OPS.spectral_transform(x, *weights, b, o, relu, norm)
            out, masks = OPS.spectral_transform_masked(x, *weights, b, o, relu, norm)
            assert torch.equal(out, plain)
            assert out.is_contiguous(memory_format=torch.channels_last)
            assert masks.dtype == torch.uint8 and masks.dim() == 1
    c = case[2]
    xf = x[:, :c].contiguous()
    for norm in NORMS:
        out, masks = OPS.fourier_unit_masked(xf, weights[2], weights[3], norm)
        assert torch.equal(out, OPS.fourier_unit(xf, weights[2], weights[3], norm))


@pytest.mark.parametrize("case", [(2, 6, 5, 7, 9, 10), (1, 3, 3, 5, 5, 7), (1, 5, 3, 4, 67, 5), (1, 3, 2, 4, 2, 134)],
                         ids=shape_id)
def test_masks_are_compact_bits_of_the_relus(case):
    batch, cin, ch, cout, h, w = case
    wf = w // 2 + 1
    x, weights, bias, other = make_case(case, seed=11)
    for relu in (False, True):
        _, masks = OPS.spectral_transform_masked(x, *weights, bias, other, relu, "ortho")
        elements = ch * h * w + 2 * ch * h * wf + (cout * h * w if relu else 0)
        rows = 2 * h + wf  # the mask rows of one image: whole bytes each
        assert masks.numel() <= batch * (elements / 8 + rows)
        assert masks.numel() == spectral.mask_bytes(batch, ch, cout, h, w, relu, False)

        # The layout of csrc/cpu/spectral_masks.h: [y > 0] rows, [Z > 0] columns, [out > 0] rows.
        y_pre, z_pre, out_pre = pre_activations(x, *weights, bias, other, "ortho")
        y_bytes = batch * h * ((w * ch + 7) // 8)
        z_bytes = batch * wf * ((h * 2 * ch + 7) // 8)
        want_y = (y_pre > 0).permute(0, 2, 3, 1).reshape(batch * h, w * ch)
        assert torch.equal(unpack(masks[:y_bytes], batch * h, w * ch), want_y)
        z_positive = (z_pre > 0).permute(0, 3, 2, 1)  # (N, Wf, H, 2Ch), interleaved channels
        if own_fft(h, w):  # the own pipeline orders them split: the real parts, then the imaginary parts
            z_positive = torch.cat([z_positive[..., 0::2], z_positive[..., 1::2]], dim=-1)
        got_z = unpack(masks[y_bytes:y_bytes + z_bytes], batch * wf, h * 2 * ch)
        assert torch.equal(got_z, z_positive.reshape(batch * wf, h * 2 * ch))
        if relu:
            want_out = (out_pre > 0).permute(0, 2, 3, 1).reshape(batch * h, w * cout)
            assert torch.equal(unpack(masks[y_bytes + z_bytes:], batch * h, w * cout), want_out)
        else:
            assert masks.numel() == y_bytes + z_bytes
    _, masks = OPS.fourier_unit_masked(x[:, :ch].contiguous(), weights[2], weights[3], "ortho")
    assert masks.numel() == spectral.mask_bytes(batch, ch, ch, h, w, False, True)
    assert masks.numel() <= batch * (2 * ch * h * wf / 8 + wf)


def test_backward_ops_match_autograd_of_the_reference():
    """The backward ops called directly: grad_x and grad_out_masked (the incoming grad where out > 0)."""
    case = (2, 6, 4, 5, 8, 6)
    x, weights, bias, other = make_case(case, seed=13)
    grad = torch.randn(2, 5, 8, 6, dtype=torch.float64)
    for relu in (False, True):
        out, masks = OPS.spectral_transform_masked(x, *weights, bias, other, relu, "backward")
        grad_x, grad_masked = OPS.spectral_transform_backward(grad, masks, weights[0], weights[2], weights[4], relu,
                                                              "backward")
        leaf = x.clone().requires_grad_()
        want, = torch.autograd.grad(spectral_transform_reference(leaf, *weights, bias, other, relu, "backward"),
                                    leaf, grad)
        assert relative_error(grad_x, want) <= 1e-12
        assert grad_x.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(grad_masked, grad * (out > 0) if relu else grad)
        assert grad_masked.data_ptr() != grad.data_ptr()


@pytest.mark.parametrize("case", [(2, 16, 12, 10, 24, 36), (1, 6, 4, 5, 67, 8)], ids=shape_id)
def test_threads_agree(case):
    """Several threads (rows, column groups and mask bytes split between them) give one thread's results."""
    x, weights, bias, other = make_case(case, seed=12)
    grad = torch.randn(case[0], case[3], case[4], case[5], dtype=torch.float64)

    def run():
        out, masks = OPS.spectral_transform_masked(x, *weights, bias, other, True, "ortho")
        grad_x, _ = OPS.spectral_transform_backward(grad, masks, weights[0], weights[2], weights[4], True, "ortho")
        fu_out, fu_masks = OPS.fourier_unit_masked(x[:, :case[2]].contiguous(), weights[2], weights[3], "forward")
        return out, masks, grad_x, fu_out, fu_masks, OPS.fourier_unit_backward(fu_out, fu_masks, weights[2], "forward")

    one = run()
    torch.set_num_threads(4)
    many = run()
    for a, b in zip(one, many):
        if a.dtype == torch.uint8:
            assert torch.equal(a, b)
        else:
            assert relative_error(b, a) <= 1e-13


def test_empty_batch():
    x, weights, bias, other = make_case((1, 4, 3, 5, 6, 7), seed=1)
    x, other = x[:0], other[:0]
    out, masks = OPS.spectral_transform_masked(x, *weights, bias, other, True, "ortho")
    assert out.shape == (0, 5, 6, 7) and masks.numel() == 0
    grad_x, grad_masked = OPS.spectral_transform_backward(out, masks, weights[0], weights[2], weights[4], True, "ortho")
    assert grad_x.shape == (0, 4, 6, 7) and grad_masked.shape == (0, 5, 6, 7)


# --- the wrappers -----------------------------------------------------------------------------


def test_inference_runs_the_plain_op():
    x, weights, bias, other = make_case((1, 4, 3, 5, 6, 7), seed=2)
    out = spectral.spectral_transform(x, *weights, bias, other, True)
    assert out.grad_fn is None and not out.requires_grad
    x.requires_grad_()
    with torch.no_grad():
        assert spectral.spectral_transform(x, *weights, bias, other, True).grad_fn is None
    assert spectral.spectral_transform(x, *weights, bias, other, True).requires_grad
    # Only bias needing a gradient is enough.
    out = spectral.spectral_transform(x.detach(), *weights, bias.requires_grad_(), None, False)
    grad_bias, = torch.autograd.grad(out.sum(), bias)
    assert torch.allclose(grad_bias, torch.full_like(bias, 6 * 7.0))


def test_fake_kernels_and_autograd_registration():
    x, weights, bias, other = make_case((1, 4, 3, 5, 6, 7), seed=4)
    x.requires_grad_()
    torch.library.opcheck(OPS.spectral_transform_masked.default, (x, *weights, bias, other, True, "ortho"))
    xf = x.detach()[:, :3].contiguous().requires_grad_()
    torch.library.opcheck(OPS.fourier_unit_masked.default, (xf, weights[2], weights[3], "forward"),
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    out, masks = OPS.spectral_transform_masked(x.detach(), *weights, bias, other, True, "ortho")
    torch.library.opcheck(OPS.spectral_transform_backward.default,
                          (torch.randn_like(out), masks, weights[0], weights[2], weights[4], True, "ortho"),
                          test_utils=("test_schema", "test_faketensor"))
    out, masks = OPS.fourier_unit_masked(xf.detach(), weights[2], weights[3], "forward")
    torch.library.opcheck(OPS.fourier_unit_backward.default, (torch.randn_like(out), masks, weights[2], "forward"),
                          test_utils=("test_schema", "test_faketensor"))


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", ["w1", "b1", "w_freq", "b_freq", "w2"])
def test_weights_requiring_grad_are_refused(weight):
    x, weights, bias, other = make_case((1, 4, 3, 5, 6, 7), seed=6)
    named = dict(zip(("w1", "b1", "w_freq", "b_freq", "w2"), weights))
    named[weight].requires_grad_()
    x.requires_grad_()
    message = ("spectral_transform: gradients with respect to the weights are not supported; "
               "only x, bias and other get gradients")
    with pytest.raises(RuntimeError, match=f"^{message}$"):
        spectral.spectral_transform(x, *named.values(), bias, other, True)
    if weight in ("w_freq", "b_freq"):
        with pytest.raises(RuntimeError, match="^fourier_unit: gradients with respect to the weights are not "
                                               "supported; only x gets gradients$"):
            spectral.fourier_unit(x[:, :3], named["w_freq"], named["b_freq"])


def test_bfloat16_backward_is_refused():
    x, weights, bias, other = make_case((1, 4, 3, 5, 6, 7), seed=8, dtype=torch.bfloat16)
    message = "spectral_transform_backward: bfloat16 is not supported, use float32 or float64"
    out, masks = OPS.spectral_transform_masked(x, *weights, bias, other, True, "ortho")
    with pytest.raises(RuntimeError, match=f"^{message}$"):
        OPS.spectral_transform_backward(out, masks, weights[0], weights[2], weights[4], True, "ortho")
    leaf = x.clone().requires_grad_()
    out = spectral.spectral_transform(leaf, *weights, bias, other, True)
    with pytest.raises(RuntimeError, match=f"^{message}$"):
        out.sum().backward()
    out = spectral.fourier_unit(leaf[:, :3], weights[2], weights[3])
    with pytest.raises(RuntimeError, match="^fourier_unit_backward: bfloat16 is not supported, use float32 or "
                                           "float64$"):
        out.sum().backward()


def test_backward_argument_errors():
    x, weights, bias, other = make_case((1, 4, 3, 5, 6, 7), seed=9)
    out, masks = OPS.spectral_transform_masked(x, *weights, bias, other, True, "ortho")
    w1, w_freq, w2 = weights[0], weights[2], weights[4]
    with pytest.raises(RuntimeError, match=r"^spectral_transform_backward: masks must be the 1-D uint8 CPU tensor of "
                                           rf"{masks.numel()} bytes that spectral_transform_masked returns"):
        OPS.spectral_transform_backward(out, masks[1:], w1, w_freq, w2, True, "ortho")
    with pytest.raises(RuntimeError, match=r"^spectral_transform_backward: masks must be"):
        # Masks of a forward without the ReLU are too short for a backward with it.
        OPS.spectral_transform_backward(out, OPS.spectral_transform_masked(x, *weights, bias, other, False, "ortho")[1],
                                        w1, w_freq, w2, True, "ortho")
    with pytest.raises(RuntimeError, match=r"^spectral_transform_backward: w2 must have shape \[5, 3\]"):
        OPS.spectral_transform_backward(out, masks, w1, w_freq, w2[:4], True, "ortho")
    with pytest.raises(RuntimeError, match=r"^spectral_transform_backward: w_freq must have the dtype of grad "
                                           r"\(torch.float64\), got torch.float32$"):
        OPS.spectral_transform_backward(out, masks, w1, w_freq.float(), w2, True, "ortho")
    with pytest.raises(RuntimeError, match=r'^spectral_transform_backward: fft_norm must be "ortho", "forward" or '
                                           r'"backward", got "half"$'):
        OPS.spectral_transform_backward(out, masks, w1, w_freq, w2, True, "half")


def test_backward_off_the_cpu_is_refused():
    x = torch.empty(1, 4, 6, 7, device="meta", requires_grad=True)
    weights = [t.to("meta") for t in make_case((1, 4, 3, 5, 6, 7), seed=1)[1]]
    with pytest.raises(RuntimeError, match="^spectral_transform: the backward runs on the CPU only, got x on meta"):
        spectral.spectral_transform(x, *weights)
    with pytest.raises(RuntimeError, match="^fourier_unit: the backward runs on the CPU only, got x on meta"):
        spectral.fourier_unit(x[:, :3], weights[2], weights[3])
