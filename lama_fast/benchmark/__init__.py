"""The benchmark harness: kernel-level and end-to-end timings of lama_fast and of its peers.

A *system* is one way of running a block or the whole generator: the
reference model eager or channels_last, ``torch.compile``, OpenVINO, ONNX
Runtime, our fused op or one of our backends.  A *row* is one measurement:
one (suite, block, shape, system, dtype) with its timings, memory, parity and
the machine it ran on.  A system whose package or op is missing gives an
``unavailable: <reason>`` row, never an exception.

- ``core``: the measuring core every benchmark uses (timing, resident memory,
  inputs, uint8 agreement, the machine, rows, worker processes);
- ``plan``: the suites, systems and aliases, ``BenchConfig``;
- ``blocks``: the kernel blocks, their FLOPs and rates, the kernel jobs;
- ``peers``: torch.compile, OpenVINO and ONNX Runtime; ``systems``: every end-to-end system;
- ``e2e``: the reference outputs and the end-to-end jobs;
- ``run``: jobs in worker processes, ``run_benchmarks``; ``report``: markdown and the plot.
"""

from .blocks import (FFC_CHANNELS, FFC_RATIO, FOURIER_CHANNELS, SPECTRAL_CHANNELS, block_flops, build_kernel_block,
                     fold_spectral_transform, fourier_unit_flops, kernel_input, kernel_shape, kernel_system,
                     measure_rates, spectral_transform_flops)
from ..backends.cpu import cpu_flags
from .core import (Timing, Unavailable, append_json, current_rss_bytes, dtype_from_name, dtype_name,
                   e2e_input, machine_description, machine_info, measure, new_row, peak_rss_bytes, to_uint8_image,
                   uint8_agreement)
from .e2e import load_reference_generator, reference_cache_paths
from .peers import BENCH_EXTRA, Runner
from .plan import (E2E_SIZES, E2E_SYSTEMS, KERNEL_BLOCKS, KERNEL_SIZES, KERNEL_SYSTEMS, OURS_SYSTEMS, PEER_SYSTEMS,
                   SUITES, SYSTEM_ALIASES, BenchConfig, expand_systems)
from .report import e2e_markdown, kernel_markdown, markdown_report, plot_e2e
from .run import add_speedups, estimate_seconds, execute_job, run_benchmarks, run_job
from .systems import build_e2e_system, system_dtype

__all__ = [
    "BENCH_EXTRA", "E2E_SIZES", "E2E_SYSTEMS", "FFC_CHANNELS", "FFC_RATIO", "FOURIER_CHANNELS", "KERNEL_BLOCKS",
    "KERNEL_SIZES", "KERNEL_SYSTEMS", "OURS_SYSTEMS", "PEER_SYSTEMS", "SPECTRAL_CHANNELS", "SUITES",
    "SYSTEM_ALIASES", "BenchConfig", "Runner", "Timing", "Unavailable", "add_speedups", "append_json",
    "block_flops", "build_e2e_system", "build_kernel_block", "cpu_flags", "current_rss_bytes", "dtype_from_name",
    "dtype_name", "e2e_input", "e2e_markdown", "estimate_seconds", "execute_job", "expand_systems",
    "fold_spectral_transform", "fourier_unit_flops", "kernel_input", "kernel_markdown", "kernel_shape",
    "kernel_system", "load_reference_generator", "machine_description", "machine_info", "markdown_report",
    "measure", "measure_rates", "new_row", "peak_rss_bytes", "plot_e2e", "reference_cache_paths",
    "run_benchmarks", "run_job", "spectral_transform_flops", "system_dtype", "to_uint8_image", "uint8_agreement",
]
