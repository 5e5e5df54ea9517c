"""pytest-benchmark micro-benchmarks of the kernel-level blocks (not part of the test suite).

    .venv/bin/python -m pytest bench/test_kernels_bench.py --benchmark-only
    LAMA_FAST_BENCH_SIZES=64 LAMA_FAST_BENCH_ROUNDS=3 .venv/bin/python -m pytest bench/test_kernels_bench.py --benchmark-only

Blocks at big-lama's widths (FourierUnit 192, SpectralTransform 384->384, one
FFC layer 512 with ratio 0.75), float32, batch 1; systems: the reference
eager, the reference channels_last, and ours (skipped with the reason when
the fused op or the cpu backend is unavailable).  Parity and peak memory are
in ``bench/run_all.py`` / ``lama-fast bench --suite kernels``; this file only times.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("pytest_benchmark", reason="pytest-benchmark is not installed (pip install 'lama_fast[bench]')")

from lama_fast.benchmark import (  # noqa: E402
    KERNEL_BLOCKS, KERNEL_SIZES, KERNEL_SYSTEMS, Unavailable, block_flops, build_kernel_block, kernel_input,
    kernel_shape, kernel_system, machine_info,
)

SIZES = [int(s) for s in os.environ.get("LAMA_FAST_BENCH_SIZES", ",".join(map(str, KERNEL_SIZES))).split(",") if s]
ROUNDS = int(os.environ.get("LAMA_FAST_BENCH_ROUNDS", "5"))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("system", KERNEL_SYSTEMS)
@pytest.mark.parametrize("block", KERNEL_BLOCKS)
def test_kernel_block(benchmark, block: str, system: str, size: int) -> None:
    module = build_kernel_block(block)
    inputs = kernel_input(block, size)
    try:
        run = kernel_system(block, system, module, inputs)
    except Unavailable as exc:
        pytest.skip(f"{system}: {exc}")
    benchmark.group = f"{block} {kernel_shape(block, size)}"
    benchmark.extra_info.update(block=block, system=system, size=size, dtype="float32",
                                gemm_flops=block_flops(block, size), machine=machine_info())
    with torch.inference_mode():
        benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
