"""Fake kernels of the test-only ops ``lama_fast::cuda_emulated_*`` (``csrc/cpu/cuda_emulation.cpp``).

These ops run the CUDA pipeline on the CPU so that the tests check the GPU
code's index arithmetic without a GPU (``tests/test_cuda_ext.py``); they take
the schemas of the ops they emulate. Importing this module gives them meta
tensors and ``torch.compile`` support.
"""

from __future__ import annotations

import torch

from lama_fast._build import ops_reasons
from lama_fast.ops.spectral import channels_last_output

OPS = ("cuda_emulated_spectral_transform", "cuda_emulated_fourier_unit", "cuda_emulated_mixed_spectrum")

if not ops_reasons(OPS):

    @torch.library.register_fake("lama_fast::cuda_emulated_spectral_transform")
    def _emulated_spectral_transform_fake(x, w1, b1, w_freq, b_freq, w2, bias, other, relu, fft_norm):
        return channels_last_output(x, w2.shape[0])

    @torch.library.register_fake("lama_fast::cuda_emulated_fourier_unit")
    def _emulated_fourier_unit_fake(x, w_freq, b_freq, fft_norm):
        return channels_last_output(x, x.shape[1])

    @torch.library.register_fake("lama_fast::cuda_emulated_mixed_spectrum")
    def _emulated_mixed_spectrum_fake(y, w_freq, b_freq, fft_norm):
        n, c, h, w = y.shape
        complex_dtype = torch.complex128 if y.dtype == torch.float64 else torch.complex64
        return y.new_empty((n, h, w // 2 + 1, c), dtype=complex_dtype)
