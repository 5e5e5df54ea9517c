"""Inputs and output checks shared by the tests of the ``torch.ops.lama_fast`` ops (against lama_fast.ops.reference)."""

from __future__ import annotations

import pytest
import torch

from lama_fast._build import build_info, extension_reasons


def require_extension() -> None:
    """Skip the calling test module where lama_fast._C is not available; fail where it was built but does not load."""
    reasons = extension_reasons()
    if reasons:
        if build_info()["cpu_extension"].startswith("built"):
            raise RuntimeError(f"lama_fast._C was built but does not load: {'; '.join(reasons)}")
        pytest.skip(f"lama_fast._C is not available: {'; '.join(reasons)}", allow_module_level=True)


def rand(*shape, seed=0) -> torch.Tensor:
    """Seeded standard normal float64 values (CPU)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def spectral_weights(channels: int, seed: int, cin=None, cout=None) -> dict:
    """Folded weights of a spectral transform at the golden cases' scale (float64, CPU): w1, b1, w_freq, b_freq, w2."""
    gen = torch.Generator().manual_seed(seed)
    cin = cin or 2 * channels
    cout = cout or 2 * channels

    def draw(*shape, scale=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale

    return dict(w1=draw(channels, cin, scale=(1.5 / cin) ** 0.5), b1=draw(channels, scale=0.2),
                w_freq=draw(2 * channels, 2 * channels, scale=(1.5 / (2 * channels)) ** 0.5),
                b_freq=draw(2 * channels, scale=0.2), w2=draw(cout, channels, scale=(1.5 / channels) ** 0.5))


def shape_id(shape) -> str:
    """A parametrized case's id from its sizes: 1x12x6x12x12x20."""
    return "x".join(map(str, shape))


def check_output(out: torch.Tensor, shape, dtype: torch.dtype) -> None:
    """The ops' output contract: the shape, the dtype, channels_last memory, finite values."""
    assert out.shape == torch.Size(shape)
    assert out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(out).all()
