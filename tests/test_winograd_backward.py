"""The backward of the Winograd conv (lama_fast::conv3x3_winograd's autograd, lama_fast::winograd_weight_transpose)
against float64 autograd of F.conv2d: input, bias and other gradients, the reflect padding's fold, gradcheck,
the transposed weight and its cache, the weight-gradient error."""

from __future__ import annotations

import gc
import re
import weakref

import pytest
import torch
import torch.nn.functional as F

import lama_fast.ops.winograd as winograd
from lama_fast.ops.masks import masks_reasons
from lama_fast.ops.winograd import (
    WEIGHT_GRAD_ERROR,
    clear_transposed_weights,
    conv3x3_winograd,
    transposed_weight,
    winograd_isa,
    winograd_ops_reasons,
    winograd_weight,
    winograd_weight_transpose,
)

REASONS = winograd_ops_reasons() + masks_reasons()
pytestmark = pytest.mark.skipif(bool(REASONS), reason=f"Winograd ops unavailable: {'; '.join(REASONS)}")

# Relative error allowed on top of twice that of float32 autograd through F.conv2d. The Winograd
# convolution's own error is ~1e-6 to 2e-6 of the output's largest element (3-5x float32 F.conv2d's at a few
# channels, about the same at LaMa's hundreds); at LaMa's shapes the floor is smaller.
FLOOR = 5e-6
LAMA_FLOOR = 2e-6
# float32's machine epsilon.
EPS32 = torch.finfo(torch.float32).eps


def _data(n, cin, cout, h, w, reflect_pad, seed=0):
    """LaMa's scale: unit-variance activations, weights ~ N(0, 1/(9*Cin)); float32. x is (N, Cin, H+2, W+2), or
    (N, Cin, H, W) with reflect_pad=1; the output and grad are (N, Cout, H, W)."""
    gen = torch.Generator().manual_seed(seed)
    pad = 2 * (1 - reflect_pad)
    x = torch.randn(n, cin, h + pad, w + pad, generator=gen)
    weight = torch.randn(cout, cin, 3, 3, generator=gen) / (9 * cin) ** 0.5
    bias = torch.randn(cout, generator=gen)
    other = torch.randn(n, cout, h, w, generator=gen)
    grad = torch.randn(n, cout, h, w, generator=gen)
    return x, weight, bias, other, grad


def _relative_error(got, want):
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def _conv2d_grads(x, weight, bias, other, grad, mask, reflect_pad, dtype):
    """Gradients of x, bias, other through F.conv2d(pad(x), weight) + bias + other with the ReLU as ``mask``
    (None: no ReLU), computed by autograd in ``dtype`` on the same float32 inputs."""
    leaves = [None if t is None else t.to(dtype).requires_grad_() for t in (x, bias, other)]
    xd, bd, od = leaves
    if dtype == torch.float32:
        xd = xd.contiguous(memory_format=torch.channels_last)
    padded = F.pad(xd, (1, 1, 1, 1), mode="reflect") if reflect_pad else xd
    out = F.conv2d(padded, weight.to(dtype), bd)
    if od is not None:
        out = out + od
    if mask is not None:
        out = torch.where(mask, out, torch.zeros((), dtype=dtype))
    out.backward(grad.to(dtype))
    return [None if t is None else t.grad for t in leaves]


@pytest.fixture(params=["generic", "best"])
def isa(request, monkeypatch):
    """The portable kernels, and the best ones this CPU has."""
    if request.param == "best":
        monkeypatch.delenv("LAMA_FAST_WINOGRAD_ISA", raising=False)
        if winograd_isa() == "generic":
            pytest.skip("this CPU's best kernels are the portable ones, tested already")
    else:
        monkeypatch.setenv("LAMA_FAST_WINOGRAD_ISA", "generic")
    return winograd_isa()


def _check_grads(n, cin, cout, h, w, reflect_pad, bias, other, relu, seed=0, floor=FLOOR):
    x, weight, b, o, grad = _data(n, cin, cout, h, w, reflect_pad, seed)
    b = b if bias else None
    o = o if other else None
    packed = winograd_weight(weight)
    leaves = [None if t is None else t.clone().requires_grad_() for t in (x, b, o)]
    out = conv3x3_winograd(leaves[0], packed, leaves[1], leaves[2], relu, reflect_pad)
    # An NCHW gradient for a channels_last output; autograd.grad returns the op's gradients as they are.
    got = dict(zip([i for i, t in enumerate(leaves) if t is not None],
                   torch.autograd.grad(out, [t for t in leaves if t is not None], grad)))
    mask = out.detach() > 0 if relu else None
    want = _conv2d_grads(x, weight, b, o, grad, mask, reflect_pad, torch.float64)
    torch_grads = _conv2d_grads(x, weight, b, o, grad, mask, reflect_pad, torch.float32)

    grad_x = got[0]
    assert grad_x.shape == x.shape and grad_x.dtype == torch.float32
    assert grad_x.is_contiguous(memory_format=torch.channels_last)
    error = _relative_error(grad_x, want[0])
    torch_error = _relative_error(torch_grads[0], want[0])
    print(f"grad x ({n}x{cin}x{h}x{w} -> {cout}, reflect_pad={reflect_pad}): relative error {error:.3g}, "
          f"float32 F.conv2d's {torch_error:.3g}")
    assert error <= 2 * torch_error + floor, f"grad x relative error {error:.3g}, float32 F.conv2d's {torch_error:.3g}"
    if bias:
        assert _relative_error(got[1], want[1]) <= 1e-6
    if other:
        # The masked gradient itself: exact.
        assert torch.equal(got[2], grad if mask is None else torch.where(mask, grad, 0.0))


CASES = [(False, False, False), (True, False, True), (True, True, True), (False, True, False)]


@pytest.mark.parametrize("bias, other, relu", CASES)
@pytest.mark.parametrize("reflect_pad", [0, 1])
@pytest.mark.parametrize("n, cin, cout, h, w", [(1, 5, 6, 7, 9), (2, 16, 10, 11, 13), (1, 17, 70, 6, 11)])
def test_grads_match_float64_autograd(isa, n, cin, cout, h, w, reflect_pad, bias, other, relu):
    _check_grads(n, cin, cout, h, w, reflect_pad, bias, other, relu)


@pytest.mark.parametrize("reflect_pad", [0, 1])
@pytest.mark.parametrize("bias, other, relu", [(False, False, False), (True, True, True)])
def test_lama_shape_grads(reflect_pad, bias, other, relu):
    _check_grads(1, 128, 384, 24, 20, reflect_pad, bias, other, relu, seed=1, floor=LAMA_FLOOR)


@pytest.mark.parametrize("n, cin, cout, h, w", [(1, 3, 4, 2, 2), (1, 4, 5, 3, 5), (2, 3, 2, 5, 3), (1, 2, 3, 2, 7)])
def test_reflect_fold_on_small_images(n, cin, cout, h, w):
    """Images 2 or 3 pixels tall or wide, where the folded rows and columns meet or coincide."""
    _check_grads(n, cin, cout, h, w, 1, True, True, True, seed=2)


@pytest.mark.filterwarnings("ignore:Input #")
@pytest.mark.parametrize("reflect_pad", [0, 1])
def test_gradcheck(reflect_pad):
    """The op without ReLU is linear: central differences with a large step are exact up to rounding."""
    x, weight, bias, other, _ = _data(1, 2, 3, 4, 5, reflect_pad, seed=3)
    packed = winograd_weight(weight)
    inputs = tuple(t.clone().requires_grad_() for t in (x, bias, other))
    assert torch.autograd.gradcheck(
        lambda x, b, o: conv3x3_winograd(x, packed, b, o, False, reflect_pad), inputs, eps=0.5, atol=1e-3, rtol=1e-3
    )


def test_only_the_needed_grads_are_computed(monkeypatch):
    x, weight, bias, other, grad = _data(1, 3, 4, 5, 6, 1, seed=4)

    def forbidden(*args, **kwargs):
        raise AssertionError("the input gradient was computed though x does not require grad")

    monkeypatch.setattr(winograd, "conv3x3_winograd_input_grad", forbidden)
    bias.requires_grad_()
    out = conv3x3_winograd(x, winograd_weight(weight), bias, other, True, 1)
    out.backward(grad)
    assert torch.allclose(bias.grad, torch.where(out > 0, grad, 0.0).sum((0, 2, 3)), rtol=1e-6, atol=1e-6)
    assert x.grad is None and other.grad is None


def test_defaults_left_out():
    """The dispatcher passes only (x, packed_weight) when the rest are defaults: one gradient for each."""
    x, weight, _, _, grad = _data(1, 3, 4, 5, 6, 0, seed=5)
    x.requires_grad_()
    torch.ops.lama_fast.conv3x3_winograd.default(x, winograd_weight(weight)).backward(grad)
    (want,) = _conv2d_grads(x.detach(), weight, None, None, grad, None, 0, torch.float64)[:1]
    assert _relative_error(x.grad, want) <= 1e-5


def test_weight_gradient_is_refused():
    x, weight, _, _, _ = _data(1, 3, 4, 5, 6, 1)
    packed = winograd_weight(weight).requires_grad_()
    with pytest.raises(RuntimeError, match=re.escape(WEIGHT_GRAD_ERROR)):
        conv3x3_winograd(x, packed, reflect_pad=1)
    assert WEIGHT_GRAD_ERROR == ("conv3x3_winograd: gradients with respect to the weight are not supported; "
                                 "only x, bias and other get gradients")
    with torch.no_grad():
        conv3x3_winograd(x, packed, reflect_pad=1)  # no graph, no error


def test_opcheck_with_grads():
    x, weight, bias, other, _ = _data(1, 3, 5, 6, 5, 1, seed=6)
    packed = winograd_weight(weight)
    args = (x.requires_grad_(), packed, bias.requires_grad_(), other.requires_grad_())
    torch.library.opcheck(torch.ops.lama_fast.conv3x3_winograd.default, (*args, True, 1))
    # The rest without the (slow) traced backward.
    quick = ("test_schema", "test_autograd_registration", "test_faketensor")
    torch.library.opcheck(torch.ops.lama_fast.conv3x3_winograd.default, (*args, False, 1), test_utils=quick)
    padded = F.pad(x.detach(), (1, 1, 1, 1), mode="reflect").requires_grad_()
    torch.library.opcheck(torch.ops.lama_fast.conv3x3_winograd.default, (padded, packed), test_utils=quick)
    torch.library.opcheck(torch.ops.lama_fast.winograd_weight_transpose.default, (packed,))


# ---------------------------------------------------------------------------
# The transposed weight.


@pytest.mark.parametrize("cin, cout", [(5, 6), (70, 3), (128, 384)])
def test_transposed_weight_matches_the_transposed_kernels(cin, cout):
    gen = torch.Generator().manual_seed(7)
    weight = torch.randn(cout, cin, 3, 3, generator=gen) / (9 * cin) ** 0.5
    packed = winograd_weight(weight)
    got = winograd_weight_transpose(packed)
    want = winograd_weight(weight.transpose(0, 1).flip(2, 3).contiguous())
    assert got.shape == (36, cout, cin) and got.dtype == torch.float32
    # Float32 rounding: every Winograd position within two units in the last place of its largest element.
    error = ((got - want).abs().amax((1, 2)) / want.abs().amax((1, 2))).max().item()
    assert error <= 2 * EPS32, f"relative error {error:.3g} per position"
    # Transposing twice gives the weight back.
    twice = winograd_weight_transpose(got)
    assert ((twice - packed).abs().amax((1, 2)) / packed.abs().amax((1, 2))).max().item() <= 4 * EPS32


@pytest.mark.parametrize("cin, cout", [(5, 6), (64, 96)])
def test_recovered_kernels(cin, cout):
    """The transposed convolution's response to unit impulses is the rotated, transposed float64 weight."""
    gen = torch.Generator().manual_seed(8)
    weight = torch.randn(cout, cin, 3, 3, generator=gen, dtype=torch.float64) / (9 * cin) ** 0.5
    transposed = winograd_weight_transpose(winograd_weight(weight.float()))
    impulses = torch.zeros(cout, cout, 5, 5)  # sample k: a unit at the centre of channel k
    impulses[torch.arange(cout), torch.arange(cout), 2, 2] = 1.0
    response = conv3x3_winograd(impulses, transposed)  # (Cout, Cin, 3, 3): the kernels rotated once more
    recovered = response.permute(1, 0, 2, 3).flip(2, 3).double()  # w.transpose(0, 1).flip(2, 3)
    want = weight.float().double().transpose(0, 1).flip(2, 3)
    assert _relative_error(recovered, want) <= 1e-6


def test_transposed_weight_errors_and_fake():
    with pytest.raises(RuntimeError, match=re.escape(
            "winograd_weight_transpose: expected a packed weight of shape (36, Cin, Cout) from winograd_weight, "
            "got [9, 3, 4]")):
        winograd_weight_transpose(torch.randn(9, 3, 4))
    with pytest.raises(RuntimeError, match=re.escape(
            "winograd_weight_transpose: expected a float32 packed weight, got Double")):
        winograd_weight_transpose(torch.randn(36, 3, 4, dtype=torch.float64))
    meta = torch.ops.lama_fast.winograd_weight_transpose.default(torch.empty(36, 3, 4, device="meta"))
    assert meta.shape == (36, 4, 3) and meta.dtype == torch.float32


def test_transposed_weight_cache():
    packed = winograd_weight(torch.randn(4, 3, 3, 3))
    first = transposed_weight(packed)
    assert transposed_weight(packed) is first, "computed again"
    assert torch.equal(first, winograd_weight_transpose(packed))
    clear_transposed_weights()
    second = transposed_weight(packed)
    assert second is not first and torch.equal(second, first)
    packed.mul_(2)  # modified in place: computed again
    third = transposed_weight(packed)
    assert third is not second and torch.allclose(third, 2 * second, rtol=1e-6, atol=1e-7)
    kept = weakref.ref(third)
    del packed, first, second, third
    gc.collect()
    assert kept() is None, "the transposed weight outlived its packed weight"


def test_weight_made_in_inference_mode():
    """A model converted under torch.inference_mode has inference tensors for packed weights."""
    x, weight, _, _, grad = _data(1, 3, 4, 5, 6, 1, seed=10)
    with torch.inference_mode():
        packed = winograd_weight(weight)
    assert transposed_weight(packed) is transposed_weight(packed)
    leaf = x.clone().requires_grad_()
    conv3x3_winograd(leaf, packed, reflect_pad=1).backward(grad)
    (want,) = _conv2d_grads(x, weight, None, None, grad, None, 1, torch.float64)[:1]
    assert _relative_error(leaf.grad, want) <= 1e-5


def test_backward_uses_the_cache(monkeypatch):
    x, weight, _, _, grad = _data(1, 3, 4, 5, 6, 1, seed=9)
    packed = winograd_weight(weight)
    calls = []
    original = winograd.winograd_weight_transpose
    monkeypatch.setattr(winograd, "winograd_weight_transpose", lambda p: calls.append(p) or original(p))
    clear_transposed_weights()
    for _ in range(3):
        leaf = x.clone().requires_grad_()
        conv3x3_winograd(leaf, packed, relu=True, reflect_pad=1).backward(grad)
    assert len(calls) == 1
