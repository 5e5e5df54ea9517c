"""``lama-fast parity``: each available backend against the float64 reference."""

from __future__ import annotations

import argparse
from typing import Callable

import torch

from .common import (
    CliError, checkpoint_file, dtype_name, model_options, print_table, progress, reading_checkpoint, runnable_backends,
)


def generator_for(args) -> torch.nn.Module:
    """Float32 reference weights: the user's checkpoint, or seeded random ones in a released layout."""
    if args.checkpoint:
        from ..checkpoint import load_generator

        checkpoint_file(args.checkpoint)
        with reading_checkpoint(args.checkpoint):
            return load_generator(args.checkpoint)
    from ..model.random import random_generator

    return random_generator(args.model, seed=args.seed)


def cmd_parity(args) -> int:
    from ..parity import compare_backends, tolerance_for

    tolerance = args.tolerance if args.tolerance is not None else tolerance_for(args.dtype)
    reference = generator_for(args)
    names = runnable_backends(args.device, args.dtype)
    if not names:
        raise CliError(f"no backend can run on {args.device} in {dtype_name(args.dtype)}")
    rows = compare_backends(reference, names, args.device, args.dtype, args.sizes, args.seed, tolerance,
                            progress=progress)
    source = args.checkpoint or f"random {args.model} weights (seed {args.seed})"
    print(f"parity against the float64 reference on {args.device}, {source}")
    print_table(("backend", "size", "dtype", "max abs err", "mean abs err", "output std", "status"), [
        (r.backend, f"{r.size}x{r.size}", dtype_name(r.dtype), f"{r.max_abs_err:.2e}", f"{r.mean_abs_err:.2e}",
         f"{r.output_std:.3f}", "ok" if r.ok else f"FAIL (> {r.tolerance:g})") for r in rows])
    return 1 if any(not r.ok for r in rows) else 0


def add_parser(add_command: Callable[..., argparse.ArgumentParser]) -> None:
    p = add_command("parity", help="each available backend against the float64 reference")
    model_options(p, "256,512")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max abs error allowed (default by dtype: float32 2e-4, bfloat16 1e-2, float64 1e-10)")
    p.set_defaults(func=cmd_parity)
