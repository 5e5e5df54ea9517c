"""``lama-fast inpaint SRC -o DST --ray [local|ADDRESS]``: a folder or a manifest, inpainted on Ray Data."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import List, Optional

from .common import CliError, dtype_name
from .inpaint import CHECKPOINT_ENV, checkpoint_path, inpaint_options, output_folder, save_options


def inpaint_on_ray(args, source: Optional[str]) -> int:
    from ..distributed import RESULTS_NAME, folder_items, inpaint_dataset, is_manifest, manifest_items, ray_reasons
    from ..distributed import storage

    if not source:
        raise CliError("--ray needs a folder or a manifest: lama-fast inpaint SRC -o DST --ray")
    started = time.strftime("%Y%m%d-%H%M%S")
    results_name = RESULTS_NAME.format(start=started)
    why = ray_reasons()
    if why:
        raise CliError(f"--ray needs the distributed extra: {'; '.join(why)}")
    if args.mask or args.mask_opt or args.explain:
        raise CliError("--ray runs a folder or a manifest: no MASK or --explain")
    if args.lanes is not None:
        raise CliError("--lanes goes with a folder run on this machine; with --ray, set --ray-workers and --ray-threads")
    if is_manifest(source):
        if args.mask_dir is not None:
            raise CliError("--mask-dir goes with an input folder; a manifest names each mask")
        output = args.output
        if output is not None and storage.is_local(output):
            output = str(output_folder(args))
        items = _manifest(manifest_items, source, output, args.output_format or "png")
        results = args.results or (storage.join(output, results_name) if output else _beside(source, started))
    elif storage.is_local(source) and Path(source).is_dir():
        output = str(output_folder(args))
        try:
            items, plan = folder_items(source, output, args.mask_dir, args.output_format or "png")
        except ValueError as exc:
            raise CliError(str(exc)) from None
        for failure in plan.failures:
            print(f"failed: {failure.message}", file=sys.stderr)
        if not items:
            raise CliError(f"no mask found in {source}: masks are files named NAME_mask*.png next to their "
                           f"image (or pass --mask-dir)")
        results = args.results or storage.join(output, results_name)
    else:
        raise CliError(f"{source} is neither a folder nor a manifest (.csv, .jsonl, .json, .parquet)")
    checkpoint = args.checkpoint or os.environ.get(CHECKPOINT_ENV)
    if not checkpoint or storage.is_local(checkpoint):  # a remote one is read by each worker
        checkpoint = checkpoint_path(args)
    summary = inpaint_dataset(items, checkpoint, address=args.ray, workers=args.ray_workers,
                              threads=args.ray_threads, overwrite=args.overwrite, options=inpaint_options(args),
                              save=save_options(args), device=args.device, backend=args.backend,
                              dtype=dtype_name(args.dtype), results=results)
    print(f"results: {results}")
    print(f"summary: {summary.line()}")
    return 1 if summary.failed else 0


def _manifest(read, source: str, output: Optional[str], output_format: str) -> List:
    try:
        return read(source, output, output_format)
    except (ValueError, FileNotFoundError) as exc:
        raise CliError(str(exc)) from None


def _beside(manifest: str, started: str) -> str:
    """``photos.results-START.jsonl`` next to ``photos.csv`` (a URI's query kept)."""
    from urllib.parse import urlsplit

    from ..distributed import storage

    if not storage.is_uri(manifest):
        return str(Path(manifest).with_suffix(f".results-{started}.jsonl"))
    parts = urlsplit(manifest)
    return parts._replace(path=parts.path.rsplit(".", 1)[0] + f".results-{started}.jsonl").geturl()
