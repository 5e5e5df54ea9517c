"""``lama-fast inpaint``: one image under a mask, or every image of a folder that has one."""

from __future__ import annotations

import argparse
import io
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

import torch

from .._io import atomic_write_bytes
from .common import (
    DTYPES, EXIT_INTERRUPTED, CliError, checkpoint_file, device_arg, dtype_arg, dtype_name, int_in, mask_threshold,
    max_memory, output_file, output_location, positive_float, reading_checkpoint, writing,
)

CHECKPOINT_ENV = "LAMA_FAST_CHECKPOINT"
WHERE_THE_WEIGHTS_ARE = (
    "The released LaMa weights are not bundled with lama_fast and are never downloaded by it: "
    "they are a local file you provide. The authors publish big-lama (a Lightning .ckpt inside "
    "big-lama.zip) via https://github.com/advimman/lama and "
    "https://huggingface.co/smartywu/big-lama; the TorchScript big-lama.pt that IOPaint uses is at "
    "https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt. "
    "Both load directly (lama-fast convert turns either into a .safetensors file)."
)
# The --refine-* options and the Inpainter.refine keyword each sets.
REFINE_OPTIONS = {"refine_n_iters": "n_iters", "refine_lr": "lr", "refine_min_side": "min_side",
                  "refine_max_scales": "max_scales", "refine_px_budget": "px_budget", "refine_modulo": "modulo",
                  "refine_full_size": "full_size"}
# The options of the high-resolution strategies, which refinement replaces by its own px_budget resize.
NOT_WITH_REFINE = ("hd_strategy", "crop_margin", "crop_trigger_size", "resize_limit")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def cmd_inpaint(args) -> int:
    source = args.image or args.image_opt
    check_refine_arguments(args)
    if args.ray is not None:
        from .dataset import inpaint_on_ray

        return inpaint_on_ray(args, source)
    for option in ("ray_workers", "ray_threads", "results"):
        if getattr(args, option) is not None:
            raise CliError(f"--{option.replace('_', '-')} goes with --ray")
    if source and Path(source).is_dir():
        if args.lanes is not None and args.refine:
            raise CliError("--lanes goes with inpainting, not --refine (refinement uses every core per image)")
        return _inpaint_folder(args, Path(source))
    if args.lanes is not None:
        raise CliError("--lanes goes with an input folder")
    return _inpaint_image(args)


def checkpoint_path(args) -> str:
    """--checkpoint or $LAMA_FAST_CHECKPOINT, checked to be a regular file."""
    checkpoint = args.checkpoint or os.environ.get(CHECKPOINT_ENV)
    if not checkpoint:
        raise CliError(f"no checkpoint given: pass --checkpoint PATH or set {CHECKPOINT_ENV}. {WHERE_THE_WEIGHTS_ARE}")
    checkpoint_file(checkpoint)
    return checkpoint


def inpaint_options(args) -> dict:
    """The Inpainter keywords the user gave; the others keep the Inpainter's defaults (not passed)."""
    given = {
        "hd_strategy": args.hd_strategy, "crop_margin": args.crop_margin, "crop_trigger_size": args.crop_trigger_size,
        "resize_limit": args.resize_limit, "mask_threshold": args.mask_threshold, "max_memory": args.max_memory,
    }
    return {name: value for name, value in given.items() if value is not None}


def check_refine_arguments(args) -> None:
    """Refuse the --refine-* options without --refine, and with it the options refinement does not take."""
    if not args.refine:
        for dest in REFINE_OPTIONS:
            if getattr(args, dest) is not None:
                raise CliError(f"{_flag(dest)} goes with --refine")
        return
    for dest in NOT_WITH_REFINE:
        if getattr(args, dest) is not None:
            raise CliError(f"{_flag(dest)} does not go with --refine: refinement runs on the whole image resized "
                           f"to --refine-px-budget pixels")
    if args.max_memory is not None:
        raise CliError("--max-memory does not go with --refine: refinement runs on the whole image resized to "
                       "--refine-px-budget pixels, without the memory guard")
    if args.ray is not None:
        raise CliError("--refine does not run on --ray: refine a folder on this machine (lama-fast inpaint "
                       "INPUT_DIR -o OUTPUT_DIR --refine)")
    if args.explain:
        raise CliError("--explain draws the plan of inpainting without --refine; refinement runs on the whole "
                       "image resized to --refine-px-budget pixels")
    from ..refine import RefineSettings

    settings = {key: value for key, value in refine_options(args).items() if key in RefineSettings.__dataclass_fields__}
    try:
        RefineSettings(**settings)
    except (ValueError, TypeError) as exc:
        raise CliError(refine_option_named(str(exc))) from None


def refine_option_named(message: str) -> str:
    """A refinement error that starts with a setting's name (``modulo must be ...``), with the option that
    sets it (``--refine-modulo must be ...``)."""
    first, _, rest = message.partition(" ")
    flags = {keyword: _flag(dest) for dest, keyword in REFINE_OPTIONS.items()}
    return f"{flags[first]} {rest}" if first in flags else message


def refine_options(args) -> dict:
    """The Inpainter.refine keywords the user gave (with --mask-threshold); the others keep refine's defaults."""
    given = {keyword: getattr(args, dest) for dest, keyword in REFINE_OPTIONS.items()}
    given["mask_threshold"] = args.mask_threshold
    return {name: value for name, value in given.items() if value is not None}


class ScaleProgress:
    """Refinement's progress on stderr: one line as each scale ends (``refining scale 2/2: iteration 15/15,
    loss 0.0123``), and on a terminal the line of the scale under way, rewritten after every iteration."""

    def __init__(self, stream=None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty())
        self.width = 0

    def __call__(self, scale: int, n_scales: int, iteration: int, n_iters: int, loss) -> None:
        text = f"refining scale {scale + 1}/{n_scales}: iteration {iteration + 1}/{n_iters}"
        if loss is not None:
            text += f", loss {loss:.4f}"
        done = iteration + 1 >= n_iters
        if self.live:
            self.stream.write("\r" + text.ljust(self.width) + ("\n" if done else ""))
            self.width = 0 if done else len(text)
        elif done:
            self.stream.write(text + "\n")
        self.stream.flush()


def save_options(args):
    from ..batch import SaveOptions

    return SaveOptions(jpeg_quality=args.jpeg_quality, png_compress_level=args.png_compress_level)


def _load_inpainter(args, checkpoint: str):
    from .. import load

    with reading_checkpoint(checkpoint):
        return load(checkpoint, device=args.device, backend=args.backend, dtype=args.dtype)


def _describe(inpainter) -> str:
    """``cpu backend, bfloat16``: the dtype the model computes in, not the float32 it takes in and gives out."""
    dtype = getattr(getattr(inpainter, "generator", None), "compute_dtype", inpainter.dtype)
    return f"{inpainter.backend} backend, {dtype_name(dtype)}"


def _inpaint_image(args) -> int:
    """``lama-fast inpaint IMAGE MASK -o OUT``: one image, its format from OUT's suffix."""
    from PIL import Image

    from .. import batch

    image_path = args.image or args.image_opt
    mask_path = args.mask or args.mask_opt
    if args.explain and image_path and mask_path:
        _explain(args, image_path, mask_path)
        if not args.output:
            return 0
    if not image_path or not mask_path or not args.output:
        raise CliError("inpaint needs an image, a mask and --output (lama-fast inpaint IMAGE MASK -o OUT), "
                       "or a folder (lama-fast inpaint INPUT_DIR -o OUTPUT_DIR)")
    if args.mask_dir is not None:
        raise CliError("--mask-dir goes with an input folder (lama-fast inpaint INPUT_DIR --mask-dir MASK_DIR -o "
                       "OUTPUT_DIR)")
    if args.output_format is not None:
        raise CliError("--output-format goes with an input folder; one image is written in the format of "
                       "--output's suffix")
    checkpoint = checkpoint_path(args)
    output = Path(args.output)
    if output.resolve() in (Path(image_path).resolve(), Path(mask_path).resolve()):
        raise CliError(f"refusing to overwrite an input file: {output}")
    example = output / (Path(image_path).stem + "_inpainted.png")
    output_file(output, "output", "-o takes the name of the image file to write",
                f"-o takes the file to write the result to, e.g. -o {example}")
    if output.exists() and not args.overwrite:
        raise CliError(f"{output} exists; pass --overwrite to replace it")
    if Image.registered_extensions().get(output.suffix.lower()) not in Image.SAVE:
        raise CliError(f"unknown output image format {output.suffix!r}; use .png or .jpg")
    image, mask = batch.read_pair(image_path, mask_path)
    inpainter = _load_inpainter(args, checkpoint)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if args.refine:
                result = inpainter.refine(image, mask, progress=ScaleProgress(), **refine_options(args))
            else:
                result = inpainter(image, mask, **inpaint_options(args))
        except (ValueError, TypeError) as exc:
            if args.refine:
                raise CliError(f"cannot refine {image_path}: {refine_option_named(str(exc))}") from exc
            raise CliError(f"cannot inpaint {image_path}: {exc}") from exc
    for warning in caught:
        print(f"lama-fast inpaint: {warning.message}", file=sys.stderr)
    with writing(output, "output"):
        batch.save_image(result, output, save_options(args), image.info.get("icc_profile"))
    print(f"wrote {output} ({_describe(inpainter)}{', refined' if args.refine else ''})")
    return 0


def _explain(args, image_path: str, mask_path: str) -> None:
    """Write the picture of what ``inpaint`` would run for this image (lama_fast.explain), and say it."""
    from .. import batch
    from ..backends import select_backend
    from ..explain import draw_plan
    from ..hd import HDSettings, make_plan
    from ..images import prepare_image, prepare_mask
    from ..memory import available_bytes

    target = Path(args.explain)
    if target.suffix.lower() != ".png":
        raise CliError(f"--explain writes a PNG; got {target}")
    if target.resolve() in (Path(image_path).resolve(), Path(mask_path).resolve()):
        raise CliError(f"refusing to overwrite an input file: {target}")
    output_file(target, "--explain picture", "give the name of the PNG to write")
    image, mask = batch.read_pair(image_path, mask_path)
    prepared = prepare_image(image)
    hole = prepare_mask(mask, prepared.size, args.mask_threshold or 0)
    settings = HDSettings().replace(strategy=args.hd_strategy, crop_margin=args.crop_margin,
                                    crop_trigger_size=args.crop_trigger_size, resize_limit=args.resize_limit)
    chosen, _ = select_backend(args.backend, args.device, args.dtype)
    budget = args.max_memory if args.max_memory is not None else available_bytes()
    plan = make_plan(settings, prepared.size, hole, chosen.name, args.dtype, budget,
                     explicit_budget=args.max_memory is not None)
    rgb = prepared.rgb
    if rgb.dtype != torch.uint8:
        rgb = (rgb.float() * 255).clamp(0, 255).to(torch.uint8)
    picture = draw_plan(rgb.permute(1, 2, 0).cpu().numpy(), hole.numpy(), plan)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    with writing(target, "--explain picture"):
        atomic_write_bytes(target, buffer.getvalue())
    print(f"{image_path}: {plan.describe()}")
    print(f"wrote {target}")


def output_folder(args) -> Path:
    """-o of a folder run, refused unless it is (or can be made) a writable folder."""
    if not args.output:
        raise CliError("a folder needs an output folder: lama-fast inpaint INPUT_DIR -o OUTPUT_DIR")
    output_dir = Path(args.output)
    if output_dir.exists() and not output_dir.is_dir():
        raise CliError(f"the output {output_dir} is a file; a folder of images needs an output folder")
    if not output_dir.exists():
        output_location(output_dir, "output folder")
    elif not os.access(output_dir, os.W_OK | os.X_OK):
        raise CliError(f"cannot write into the output folder {output_dir}: it is not writable")
    return output_dir


def _inpaint_folder(args, input_dir: Path) -> int:
    """``lama-fast inpaint INPUT_DIR -o OUTPUT_DIR``: every image with a mask; resumable; exit 1 if any failed."""
    from .. import batch

    if args.explain:
        raise CliError("--explain goes with one image: lama-fast inpaint IMAGE MASK --explain PLAN.png")
    if args.mask or args.mask_opt:
        raise CliError(f"{input_dir} is a folder: masks are found in it (NAME_mask*.png next to NAME.png) or in "
                       f"--mask-dir, not given as MASK")
    output_dir = output_folder(args)
    checkpoint = checkpoint_path(args)
    plan = batch.plan_folder(input_dir, output_dir, args.mask_dir, args.output_format or "png")
    if not plan.jobs and not plan.failures:
        if args.mask_dir is not None:
            raise CliError(f"no image in {input_dir} has a mask in {args.mask_dir} (an image a/b.jpg pairs with "
                           f"the mask a/b.png of the mask folder)")
        raise CliError(f"no mask found in {input_dir}: masks are files named NAME_mask*.png next to their image "
                       f"NAME.png or NAME.jpg (or pass --mask-dir)")
    loaded = []

    def load_once():
        loaded.append(_load_inpainter(args, checkpoint))
        return loaded[0]

    if args.refine:
        summary = batch.run_batch(plan, load=lambda: load_once().refine, overwrite=args.overwrite,
                                  options=refine_options(args), save=save_options(args))
    else:
        summary = batch.run_batch(plan, load=load_once, overwrite=args.overwrite, options=inpaint_options(args),
                                  save=save_options(args), lanes=args.lanes or 1)
    if summary.removed_leftovers:
        print(f"removed {len(summary.removed_leftovers)} temporary files left by an interrupted run",
              file=sys.stderr)
    if loaded:
        print(f"{'refined' if args.refine else 'inpainted'} {input_dir} into {output_dir} "
              f"({_describe(loaded[0])})")
    elif summary.skipped:
        print(f"nothing to do: all {summary.skipped} outputs exist in {output_dir} (--overwrite redoes them); "
              f"the model was not loaded")
    print(f"summary: {summary.line()}")
    if summary.interrupted:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 1 if summary.failed else 0


def add_parser(add_command: Callable[..., argparse.ArgumentParser]) -> None:
    p = add_command("inpaint", help="inpaint an image under a mask, or every image of a folder that has one",
                    description="One image: lama-fast inpaint IMAGE MASK -o OUT.png. A folder: lama-fast inpaint "
                                "INPUT_DIR -o OUTPUT_DIR, where every NAME_mask*.png under INPUT_DIR masks the "
                                "image NAME.<png|jpg|...> beside it and is written to OUTPUT_DIR under the mask's "
                                "relative path (as LaMa's predict.py), or with --mask-dir the image a/b.jpg takes "
                                "the mask MASK_DIR/a/b.png. Existing outputs are skipped, so a stopped run resumes.")
    p.add_argument("image", nargs="?", metavar="IMAGE_OR_INPUT_DIR")
    p.add_argument("mask", nargs="?", metavar="MASK")
    p.add_argument("--image", dest="image_opt", help="same as the positional IMAGE")
    p.add_argument("--mask", dest="mask_opt", help="same as the positional MASK")
    p.add_argument("-o", "--output", help="the output image, or the output folder of an input folder")
    p.add_argument("--mask-dir", help="with an input folder: masks named as the images (same relative path and "
                                      "stem, any image format) in this folder")
    p.add_argument("--checkpoint", help=f"LaMa weights (.ckpt, .pt, .safetensors); default ${CHECKPOINT_ENV}")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--backend", default="auto", help="auto (default) or a backend of lama-fast info")
    p.add_argument("--dtype", type=dtype_arg, default=torch.float32, help=f"{', '.join(DTYPES)} (default float32)")
    p.add_argument("--hd-strategy", choices=("original", "crop", "resize"),
                   help="large images: the whole image, crops around the holes, or a downscaled copy "
                        "(default: crop, which is the whole image up to --crop-trigger-size)")
    p.add_argument("--crop-margin", type=int_in(0, None, "crop margin"), help="pixels around each hole (default 128)")
    p.add_argument("--crop-trigger-size", type=int_in(1, None, "crop trigger size"),
                   help="crop only images whose long side exceeds this (default 800)")
    p.add_argument("--resize-limit", type=int_in(1, None, "resize limit"),
                   help="long side the resize strategy scales down to (default 1280)")
    p.add_argument("--mask-threshold", type=mask_threshold,
                   help="a mask pixel is a hole where its value is above this (default 0: any non-zero pixel)")
    p.add_argument("--max-memory", type=max_memory,
                   help="memory a run may use, e.g. 4G or 512M (default: what the machine has free)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: keep and skip them)")
    p.add_argument("--lanes", type=int_in(1, None, "lanes"), metavar="N",
                   help="with an input folder: N images in flight, each on one core (default 1: one image at a "
                        "time on every core); more throughput on small images, N images' memory")
    p.add_argument("--output-format", choices=("png", "jpg", "same"),
                   help="with an input folder: png (default), jpg, or same as each image")
    p.add_argument("--jpeg-quality", type=int_in(1, 100, "JPEG quality"), default=95,
                   help="1..100 (default 95)")
    p.add_argument("--png-compress-level", type=int_in(0, 9, "PNG compression level"),
                   help="0..9 (default 6, as Pillow)")
    p.add_argument("--explain", metavar="PNG",
                   help="one image: draw the regions the chosen strategy sends through the network, with the "
                        "memory estimate, to this PNG (no checkpoint needed without -o)")
    refine = p.add_argument_group(
        "refinement", "The original LaMa's refinement (predict.py refine=True): per scale of an image pyramid, "
                      "the features at the residual blocks are optimised with Adam so that the result matches the "
                      "known pixels and the previous scale's result. Reference and cpu backends; the --refine-* "
                      "options go with --refine.")
    refine.add_argument("--refine", action="store_true",
                        help="refine each result (seconds to minutes an image): the whole image, resized to "
                             "--refine-px-budget pixels if larger, no --hd-strategy, --crop-*, --resize-limit")
    refine.add_argument("--refine-n-iters", type=int_in(1, None, "refine iterations"), metavar="N",
                        help="forwards per scale after the first, with Adam steps between them (default 15)")
    refine.add_argument("--refine-lr", type=positive_float("refine learning rate"), metavar="LR",
                        help="Adam's learning rate (default 0.002)")
    refine.add_argument("--refine-min-side", type=int_in(1, None, "refine min side"), metavar="PIXELS",
                        help="the pyramid stops before a scale's short side falls below about this / sqrt(2) "
                             "(default 512)")
    refine.add_argument("--refine-max-scales", type=int_in(1, None, "refine max scales"), metavar="N",
                        help="at most this many scales (default 3)")
    refine.add_argument("--refine-px-budget", type=int_in(1, None, "refine pixel budget"), metavar="PIXELS",
                        help="an image of more pixels is refined resized to about this many, and written at that "
                             "size unless --refine-full-size (default 1800000)")
    refine.add_argument("--refine-modulo", type=int_in(1, None, "refine modulo"), metavar="N",
                        help="each scale is padded to a multiple of this, itself a multiple of 8 for big-lama "
                             "(default 8)")
    refine.add_argument("--refine-full-size", action="store_true", default=None,
                        help="write an image resized by --refine-px-budget back at its own size (the hole pixels "
                             "scaled up, the others the image's)")
    ray = p.add_argument_group("many machines (the distributed extra: pip install 'lama_fast[distributed]')")
    ray.add_argument("--ray", nargs="?", const="local", metavar="local|ADDRESS",
                     help="run a folder, or a manifest (.csv, .jsonl, .parquet with image, mask, output columns; "
                          "paths or URIs such as s3://), on Ray Data: 'local' (the default) starts a Ray instance "
                          "here, an address ('auto', 'HOST:6379', 'ray://HOST:10001') joins a running cluster")
    ray.add_argument("--ray-workers", type=int_in(1, None, "workers"),
                     help="models running at once (default: one per node)")
    ray.add_argument("--ray-threads", type=int_in(1, None, "threads"),
                     help="torch threads and Ray CPUs of each (default: a node's cores over its workers)")
    ray.add_argument("--results", help="where the result rows go (JSONL: item, status, output, seconds, error); "
                                       "default OUTPUT_DIR/lama-fast-results-START.jsonl, START the run's start time")
    p.set_defaults(func=cmd_inpaint)
