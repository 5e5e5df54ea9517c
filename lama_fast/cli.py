"""The ``lama-fast`` command: inpaint, bench, parity, info, convert."""

from __future__ import annotations

import argparse
import errno
import io
import os
import platform
import stat
import sys
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, NoReturn, Optional, Sequence, Tuple

import torch

from ._io import atomic_write_bytes, file_kind

CHECKPOINT_ENV = "LAMA_FAST_CHECKPOINT"
WHERE_THE_WEIGHTS_ARE = (
    "The released LaMa weights are not bundled with lama_fast and are never downloaded by it: "
    "they are a local file you provide. The authors publish big-lama (a Lightning .ckpt inside "
    "big-lama.zip) via https://github.com/advimman/lama and "
    "https://huggingface.co/smartywu/big-lama; the TorchScript big-lama.pt that IOPaint uses is at "
    "https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt. "
    "Both load directly (lama-fast convert turns either into a .safetensors file)."
)
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


# The exit codes, as README.md lists them.
EXIT_OK = 0
EXIT_FAILED = 1  # a run that started and failed: a write, memory, a folder item
EXIT_BAD_INPUT = 2  # arguments, unreadable or invalid files, images, checkpoints
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT

# Errors of a write that no choice of path would have avoided: the run failed, the input was fine.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


class CliError(Exception):
    """A user-facing error: printed as one line without a traceback; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, in the form of the other errors (``lama-fast inpaint: ...``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parse_sizes(text: str) -> List[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 8 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be integers >= 8, got {text!r}")
    return sizes


def _dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _device(text: str) -> str:
    """An argparse type: a torch device string (cpu, cuda, cuda:1, ...), kept as given."""
    try:
        torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"device must be a torch device such as cpu, cuda or cuda:1, "
                                         f"got {text!r}") from None
    return text


# --- paths ---------------------------------------------------------------------------------------

def _input_file(path, what: str, expected: str) -> None:
    """Refuse, by its stat alone, a path to read that is missing or not a regular file (a FIFO would block)."""
    from .images import check_regular_file

    try:
        check_regular_file(path, what, expected)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None


def _output_file(path: Path, what: str, expected: str, folder_hint: Optional[str] = None) -> None:
    """Refuse, before any work, an output path that cannot be written: a folder, a device or FIFO, a
    path under a file, or one in a folder that is not writable (permissions, read-only file system).
    ``expected`` says what to give instead; ``folder_hint`` replaces it when the path is a folder."""
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = None
    if mode is not None and stat.S_ISDIR(mode):
        raise CliError(f"the {what} {path} is a folder; {folder_hint or expected}")
    if mode is not None and not stat.S_ISREG(mode):
        raise CliError(f"the {what} {path} is not a regular file ({file_kind(mode)}); {expected}")
    _output_location(path, what)


def _output_location(path: Path, what: str) -> None:
    """Refuse an output whose nearest existing folder above it is a file or is not writable."""
    folder = path.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if os.path.lexists(folder) and not folder.is_dir():
        raise CliError(f"cannot write the {what} {path}: {folder} is a file, not a folder")
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"cannot write the {what} {path}: the folder {folder} is not writable")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@contextmanager
def _writing(path: Path, what: str) -> Iterator[None]:
    """Report a write that fails (disk full, permissions, read-only file system) as a failed run."""
    try:
        yield
    except OSError as exc:
        raise CliError(f"cannot write the {what} {path}: {_reason(exc)}", EXIT_FAILED) from exc


@contextmanager
def _reading_checkpoint(path, *also_named) -> Iterator[None]:
    """Name the checkpoint in the first line of every error of reading it (unless it names one of
    ``also_named``, the other files of the command)."""
    from .checkpoint import CheckpointError

    try:
        yield
    except FileNotFoundError as exc:
        raise CliError(f"checkpoint {path} does not exist") from exc
    except CheckpointError as exc:
        message = str(exc)
        if not any(str(name) in message.split("\n", 1)[0] for name in (path, *also_named)):
            raise CliError(f"checkpoint {path}: {message}") from exc
        raise
    except OSError as exc:
        raise CliError(f"cannot read checkpoint {path}: {_reason(exc)}") from exc


def _checkpoint_file(path) -> None:
    _input_file(path, "checkpoint", "a checkpoint file (.ckpt, .pt, .safetensors)")


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))


def _generator_for(args) -> torch.nn.Module:
    """Float32 reference weights: the user's checkpoint, or seeded random ones in a released layout."""
    if args.checkpoint:
        from .checkpoint import load_generator

        _checkpoint_file(args.checkpoint)
        with _reading_checkpoint(args.checkpoint):
            return load_generator(args.checkpoint)
    from .model.random import random_generator

    return random_generator(args.model, seed=args.seed)


def cmd_info(args) -> int:
    import numpy

    from . import __version__, available_backends

    rows = [
        ("lama_fast", __version__),
        ("python", platform.python_version()),
        ("torch", torch.__version__),
        ("numpy", numpy.__version__),
    ]
    for module in ("PIL", "safetensors", "triton"):
        try:
            mod = __import__(module)
            rows.append((module, getattr(mod, "__version__", "installed")))
        except ImportError:
            rows.append((module, "not installed"))
    from .timing import machine_description

    machine = machine_description()
    rows.append(("cpu", machine["cpu"]))
    from .benchmark import cpu_flags

    flags = cpu_flags()
    rows.append(("cpu features", ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "-"))
    rows.append(("threads", f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op"))
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        rows.append(("cuda", f"{torch.version.cuda}: {', '.join(names)}"))
    else:
        rows.append(("cuda", "no CUDA device" + ("" if torch.version.cuda else " (CPU build of torch)")))
    rows.append(("extension lama_fast._C", _extension_status() or "built"))
    if _extension_status() is None:
        from .fast.layers import winograd_reason

        why = winograd_reason()
        if why is None:
            from .ops.winograd import winograd_isa

            rows.append(("winograd 3x3 kernels", f"{winograd_isa()} (used by the cpu backend in float32)"))
        else:
            rows.append(("winograd 3x3 kernels", f"not used: {why}"))
    from ._build import build_info
    from .ops.spectral import cuda_kernels_status

    why_not_cuda = cuda_kernels_status()
    rows.append(("CUDA kernels", "built: spectral_transform and fourier_unit for CUDA tensors ("
                 + build_info()["cuda_extension"].removeprefix("built: ") + ")" if why_not_cuda is None
                 else f"not available: {why_not_cuda}"))
    rows.append(("triton kernels", _triton_status() or "importable"))
    _print_table(("component", "status"), rows)
    print()
    checks = [("cpu", torch.float32), ("cpu", torch.bfloat16)]
    if torch.cuda.is_available():
        checks += [("cuda", torch.float32), ("cuda", torch.bfloat16)]
    backend_rows = []
    for device, dtype in checks:
        for name, reason in available_backends(device, dtype).items():
            backend_rows.append((name, device, str(dtype).replace("torch.", ""), reason or "available"))
    _print_table(("backend", "device", "dtype", "status"), backend_rows)
    return 0


def _extension_status() -> Optional[str]:
    try:
        from ._build import extension_status
    except ImportError as exc:
        return f"unknown ({exc})"
    return extension_status()


def _triton_status() -> Optional[str]:
    try:
        from .kernels import triton_status
    except ImportError as exc:
        return f"unknown ({exc})"
    return triton_status()


def cmd_convert(args) -> int:
    from .checkpoint import convert

    source, output = Path(args.input), Path(args.output)
    _checkpoint_file(source)
    _output_file(output, "output", "give the name of the .safetensors file to write")
    try:
        with _reading_checkpoint(source, output):
            convert(source, output)
    except CliError as exc:
        cause = exc.__cause__
        # convert reads, then writes: an OSError of the output's folder (or a full disk) is the write.
        if isinstance(cause, OSError) and _is_write_error(cause, source, output):
            raise CliError(f"cannot write the output {output}: {_reason(cause)}", EXIT_FAILED) from cause
        raise
    print(f"wrote the generator weights of {args.input} to {args.output}")
    return 0


def _is_write_error(exc: OSError, source: Path, output: Path) -> bool:
    if exc.errno in _WRITE_ERRNOS:
        return True
    if exc.filename is None:
        return False
    failed = Path(os.fsdecode(exc.filename)).resolve()
    return failed != source.resolve() and failed.parent == output.resolve().parent


# Max abs error of the generator output (in [0, 1]) against float64, per dtype: float32
# keeps it far below one 8-bit level (1/255 = 3.9e-3); bfloat16 keeps 8 mantissa bits.
PARITY_TOLERANCE = {torch.float32: 2e-4, torch.bfloat16: 1e-2, torch.float64: 1e-10}


def cmd_parity(args) -> int:
    from .backends import available_backends, optimize
    from .benchmark import e2e_input

    if args.tolerance is None:
        args.tolerance = PARITY_TOLERANCE.get(args.dtype, 2e-4)
    reference = _generator_for(args)
    reference64 = optimize(reference, backend="reference", device=args.device, dtype=torch.float64)
    backends = available_backends(args.device, args.dtype)
    runnable = [name for name, why in backends.items() if why is None]
    for name, why in backends.items():
        if why is not None:
            print(f"skipping backend {name}: {why}", file=sys.stderr)
    if not runnable:
        raise CliError(f"no backend can run on {args.device} in {_dtype_name(args.dtype)}")
    modules = {name: optimize(reference, backend=name, device=args.device, dtype=args.dtype) for name in runnable}
    rows, failed = [], False
    for size in args.sizes:
        batch = e2e_input(size, args.seed).to(args.device)
        _progress(f"parity at {size}x{size}: float64 reference, then {', '.join(modules)}")
        with torch.no_grad():
            expected = reference64(batch.double())
            for name, module in modules.items():
                # A fast module with bfloat16 inside takes float32 in (its io_dtype).
                got = module(batch.to(getattr(module, "io_dtype", args.dtype))).double()
                err = (got - expected).abs()
                ok = bool(err.max() <= args.tolerance)
                failed |= not ok
                rows.append((
                    name, f"{size}x{size}", str(args.dtype).replace("torch.", ""),
                    f"{err.max().item():.2e}", f"{err.mean().item():.2e}",
                    f"{expected.std().item():.3f}", "ok" if ok else f"FAIL (> {args.tolerance:g})",
                ))
    source = args.checkpoint or f"random {args.model} weights (seed {args.seed})"
    print(f"parity against the float64 reference on {args.device}, {source}")
    _print_table(("backend", "size", "dtype", "max abs err", "mean abs err", "output std", "status"), rows)
    return 1 if failed else 0


def cmd_bench(args) -> int:
    from . import benchmark
    from .backends import BACKENDS, available_backends

    if args.suite is None and (args.systems or args.markdown or args.plot):
        raise CliError("--systems, --markdown and --plot go with --suite kernels|e2e|all")
    if args.suite is not None and args.backends is not None:
        raise CliError("--backends selects lama_fast backends for the plain end-to-end timing; with --suite use "
                       "--systems (e.g. backend:reference, ours, eager, compile)")
    if args.repeats < 1 or args.warmup < 1:
        raise CliError("--repeats and --warmup must be at least 1 (the warm-up count includes the first call)")
    if args.checkpoint:
        _checkpoint_file(args.checkpoint)
    if args.json:
        if os.path.lexists(args.json):
            _input_file(args.json, "--json file", "a JSON file to append the rows to")
        _output_location(Path(args.json), "--json file")
    for flag, target in (("--markdown", args.markdown), ("--plot", args.plot)):
        if target:
            _output_file(Path(target), f"{flag} file", "give a file name")
    config = benchmark.BenchConfig(
        model=args.model, checkpoint=args.checkpoint, seed=args.seed, repeats=args.repeats, warmup=args.warmup,
        isolate=args.isolate if args.suite is not None else False, parity=args.suite is not None and args.parity,
        cache_dir=args.cache_dir, dtype=benchmark.dtype_name(args.dtype), device=args.device,
        job_timeout_s=args.job_timeout,
    )
    if args.suite is None:
        # The plain end-to-end timing of lama_fast's own backends, in this process.
        if args.backends in (None, "all"):
            names = []
            for name, why in available_backends(args.device, args.dtype).items():
                if why is None:
                    names.append(name)
                else:
                    print(f"skipping backend {name}: {why}", file=sys.stderr)
        else:
            names = [b for b in args.backends.split(",") if b]
        unknown = [n for n in names if n not in BACKENDS]
        if unknown:
            raise CliError(f"unknown backend(s) {', '.join(unknown)}; known: {', '.join(BACKENDS)}")
        if not names:
            raise CliError(f"no backend can run on {args.device} in {_dtype_name(args.dtype)}")
        plan = [(size, [f"backend:{n}" for n in names]) for size in (args.sizes or [512])]
        rows = benchmark.run_benchmarks((), plan, config, progress=_progress)
        failed = [r for r in rows if r["status"] != "ok"]
        for row in failed:
            print(f"{row['system']} at {row['size']}x{row['size']}: {row['status']}", file=sys.stderr)
        machine = benchmark.machine_info()
        print(f"end-to-end generator time, batch 1, on {machine['cpu']} ({machine['threads']} threads), "
              f"torch {machine['torch']}")
        _print_table(("backend", "size", "dtype", "first call s", "median s", "spread s", "runs"), [
            (r["backend"], f"{r['size']}x{r['size']}", r["dtype"], f"{r['first_call_s']:.3f}", f"{r['median_s']:.3f}",
             f"{r['spread_s']:.3f}", str(len(r["runs_s"]))) for r in rows if r["status"] == "ok"])
        if args.json:
            with _writing(Path(args.json), "--json file"):
                benchmark.append_json(rows, args.json)
            print(f"appended {len(rows)} rows to {args.json}")
        return 1 if failed else 0

    if torch.device(args.device).type != "cpu":
        raise CliError("the kernel and end-to-end suites measure the CPU; use --device cpu")
    suites = benchmark.SUITES if args.suite == "all" else (args.suite,)
    names = args.systems.split(",") if args.systems else None
    try:
        kernel_systems = benchmark.expand_systems("kernels", names) if "kernels" in suites else []
        e2e_systems = benchmark.expand_systems("e2e", names) if "e2e" in suites else []
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.suite == "kernels":
        kernel_sizes = args.sizes or list(benchmark.KERNEL_SIZES)
    else:
        kernel_sizes = args.kernel_sizes or list(benchmark.KERNEL_SIZES)
    kernel_sizes = kernel_sizes if kernel_systems else []
    e2e_sizes = (args.sizes or [512]) if args.suite != "kernels" else []
    plan = [(size, e2e_systems) for size in e2e_sizes] if e2e_systems else []
    if not kernel_sizes and not plan:
        raise CliError(f"no system of suite {args.suite!r} among --systems {args.systems!r}")
    rows = benchmark.run_benchmarks(kernel_sizes, plan, config, kernel_systems, progress=_progress)
    print(benchmark.markdown_report(rows))
    if args.json:
        with _writing(Path(args.json), "--json file"):
            benchmark.append_json(rows, args.json)
        print(f"appended {len(rows)} rows to {args.json}")
    if args.markdown:
        with _writing(Path(args.markdown), "--markdown file"):
            atomic_write_bytes(Path(args.markdown), benchmark.markdown_report(rows).encode())
        print(f"wrote {args.markdown}")
    if args.plot:
        try:
            with _writing(Path(args.plot), "--plot file"):
                wrote = benchmark.plot_e2e(rows, args.plot)
        except ImportError:
            raise CliError(f"--plot needs matplotlib ({benchmark.BENCH_EXTRA})") from None
        print(f"wrote {args.plot}" if wrote else f"no end-to-end row to plot; {args.plot} not written")
    return 0


def _progress(message: str) -> None:
    """One line per long step on stderr, so a slow run shows where it is without mixing into the table."""
    print(message, file=sys.stderr, flush=True)


def _int_in(low: int, high: Optional[int], what: str):
    """An argparse type: an integer in [low, high] (no upper bound when high is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"in {low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{what} must be {bounds}, got {value}")
        return value

    return parse


def _mask_threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"mask threshold must be a number >= 0 (in the mask's units, "
                                         f"0..255 for 8-bit masks), got {text!r}")
    return value


def _max_memory(text: str) -> int:
    from .memory import parse_size

    try:
        return parse_size(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _checkpoint(args) -> str:
    checkpoint = args.checkpoint or os.environ.get(CHECKPOINT_ENV)
    if not checkpoint:
        raise CliError(f"no checkpoint given: pass --checkpoint PATH or set {CHECKPOINT_ENV}. {WHERE_THE_WEIGHTS_ARE}")
    _checkpoint_file(checkpoint)
    return checkpoint


def _inpaint_options(args) -> dict:
    """The Inpainter keywords the user gave; the others keep the Inpainter's defaults (not passed)."""
    given = {
        "hd_strategy": args.hd_strategy, "crop_margin": args.crop_margin, "crop_trigger_size": args.crop_trigger_size,
        "resize_limit": args.resize_limit, "mask_threshold": args.mask_threshold, "max_memory": args.max_memory,
    }
    return {name: value for name, value in given.items() if value is not None}


def _load_inpainter(args, checkpoint: str):
    from . import load

    with _reading_checkpoint(checkpoint):
        return load(checkpoint, device=args.device, backend=args.backend, dtype=args.dtype)


def _describe(inpainter) -> str:
    """``cpu backend, bfloat16``: the dtype the model computes in, not the float32 it takes in and gives out."""
    dtype = getattr(getattr(inpainter, "generator", None), "compute_dtype", inpainter.dtype)
    return f"{inpainter.backend} backend, {_dtype_name(dtype)}"


def cmd_inpaint(args) -> int:
    source = args.image or args.image_opt
    if source and Path(source).is_dir():
        return _inpaint_folder(args, Path(source))
    return _inpaint_image(args)


def _inpaint_image(args) -> int:
    """``lama-fast inpaint IMAGE MASK -o OUT``: one image, its format from OUT's suffix."""
    from PIL import Image

    from . import batch

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
    checkpoint = _checkpoint(args)
    output = Path(args.output)
    if output.resolve() in (Path(image_path).resolve(), Path(mask_path).resolve()):
        raise CliError(f"refusing to overwrite an input file: {output}")
    example = output / (Path(image_path).stem + "_inpainted.png")
    _output_file(output, "output", "-o takes the name of the image file to write",
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
            result = inpainter(image, mask, **_inpaint_options(args))
        except (ValueError, TypeError) as exc:
            raise CliError(f"cannot inpaint {image_path}: {exc}") from exc
    for warning in caught:
        print(f"lama-fast inpaint: {warning.message}", file=sys.stderr)
    with _writing(output, "output"):
        batch.save_image(result, output, _save_options(args), image.info.get("icc_profile"))
    print(f"wrote {output} ({_describe(inpainter)})")
    return 0


def _explain(args, image_path: str, mask_path: str) -> None:
    """Write the picture of what ``inpaint`` would run for this image (lama_fast.explain), and say it."""
    from . import batch
    from .backends import select_backend
    from .explain import draw_plan
    from .hd import HDSettings
    from .images import prepare_image, prepare_mask
    from .inpaint import make_plan
    from .memory import available_bytes

    target = Path(args.explain)
    if target.suffix.lower() != ".png":
        raise CliError(f"--explain writes a PNG; got {target}")
    if target.resolve() in (Path(image_path).resolve(), Path(mask_path).resolve()):
        raise CliError(f"refusing to overwrite an input file: {target}")
    _output_file(target, "--explain picture", "give the name of the PNG to write")
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
    with _writing(target, "--explain picture"):
        atomic_write_bytes(target, buffer.getvalue())
    print(f"{image_path}: {plan.describe()}")
    print(f"wrote {target}")


def _save_options(args):
    from .batch import SaveOptions

    return SaveOptions(jpeg_quality=args.jpeg_quality, png_compress_level=args.png_compress_level)


def _inpaint_folder(args, input_dir: Path) -> int:
    """``lama-fast inpaint INPUT_DIR -o OUTPUT_DIR``: every image with a mask; resumable; exit 1 if any failed."""
    from . import batch

    if args.explain:
        raise CliError("--explain goes with one image: lama-fast inpaint IMAGE MASK --explain PLAN.png")
    if args.mask or args.mask_opt:
        raise CliError(f"{input_dir} is a folder: masks are found in it (NAME_mask*.png next to NAME.png) or in "
                       f"--mask-dir, not given as MASK")
    if not args.output:
        raise CliError("a folder needs an output folder: lama-fast inpaint INPUT_DIR -o OUTPUT_DIR")
    output_dir = Path(args.output)
    if output_dir.exists() and not output_dir.is_dir():
        raise CliError(f"the output {output_dir} is a file; a folder of images needs an output folder")
    if not output_dir.exists():
        _output_location(output_dir, "output folder")
    elif not os.access(output_dir, os.W_OK | os.X_OK):
        raise CliError(f"cannot write into the output folder {output_dir}: it is not writable")
    checkpoint = _checkpoint(args)
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

    summary = batch.run_batch(plan, load=load_once, overwrite=args.overwrite, options=_inpaint_options(args),
                              save=_save_options(args))
    if summary.removed_leftovers:
        print(f"removed {len(summary.removed_leftovers)} temporary files left by an interrupted run",
              file=sys.stderr)
    if loaded:
        print(f"inpainted {input_dir} into {output_dir} ({_describe(loaded[0])})")
    elif summary.skipped:
        print(f"nothing to do: all {summary.skipped} outputs exist in {output_dir} (--overwrite redoes them); "
              f"the model was not loaded")
    print(f"summary: {summary.line()}")
    if summary.interrupted:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 1 if summary.failed else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lama-fast`` command."""
    parser = _Parser(prog="lama-fast", description="Fast, checked LaMa inpainting.",
                     epilog="Exit codes: 0 done, 1 a run that failed (a write, memory, an item of a folder), "
                            "2 bad input (arguments, files, images, checkpoints), 130 interrupted.")
    debug_help = "print the traceback of an error, not only its one-line message"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_command(name: str, **kwargs) -> argparse.ArgumentParser:
        # --debug after the command too; SUPPRESS keeps the value given before it.
        command = sub.add_parser(name, **kwargs)
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
        return command

    p = add_command("info", help="versions, threads, devices and every backend with why it is (not) usable")
    p.set_defaults(func=cmd_info)

    p = add_command("convert", help="write a checkpoint's generator weights alone to a .safetensors file")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_convert)

    def model_options(p: argparse.ArgumentParser, sizes: str) -> None:
        p.add_argument("--checkpoint", help="weights to use (default: seeded random weights in --model's layout)")
        p.add_argument("--model", default="big-lama", choices=("big-lama", "lama-fourier"))
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--sizes", type=_parse_sizes, default=_parse_sizes(sizes), help=f"comma-separated (default {sizes})")
        p.add_argument("--device", type=_device, default="cpu")
        p.add_argument("--dtype", type=_dtype, default=torch.float32)

    p = add_command("parity", help="each available backend against the float64 reference")
    model_options(p, "256,512")
    p.add_argument("--tolerance", type=float, default=None,
                   help="max abs error allowed (default by dtype: float32 2e-4, bfloat16 1e-2, float64 1e-10)")
    p.set_defaults(func=cmd_parity)

    p = add_command("bench", help="timings: lama_fast backends end to end, or the kernel / end-to-end suites with peers")
    model_options(p, "512")
    p.set_defaults(sizes=None)
    p.add_argument("--backends", default=None,
                   help="without --suite: comma-separated lama_fast backend names, or 'all' (the default)")
    p.add_argument("--suite", choices=("kernels", "e2e", "all"),
                   help="kernel blocks (sizes 64,128,256) and/or the end-to-end generator (sizes from --sizes) "
                        "against peers; each row in its own subprocess")
    p.add_argument("--systems", help="with --suite: comma-separated systems (eager, channels_last, ours, compile, "
                                     "openvino-f32, openvino-bf16, onnxruntime, ours-f32, ours-bf16, backend:NAME; "
                                     "aliases ours, openvino, peers, reference, all)")
    p.add_argument("--kernel-sizes", type=_parse_sizes, help="with --suite all: the kernel suite's spatial sizes")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing, the first call included")
    p.add_argument("--json", help="append the rows to this JSON file")
    p.add_argument("--markdown", help="with --suite: write the report as markdown to this file")
    p.add_argument("--plot", help="with --suite: plot end-to-end time against resolution to this PNG")
    p.add_argument("--cache-dir", default=os.path.join("bench", ".cache"),
                   help="where the float64 reference outputs are cached (default bench/.cache)")
    p.add_argument("--in-process", dest="isolate", action="store_false",
                   help="with --suite: run every row in this process (faster; no peak-memory figures)")
    p.add_argument("--no-parity", dest="parity", action="store_false",
                   help="with --suite: skip the float64 reference and the error columns")
    p.add_argument("--job-timeout", type=float, help="with --suite: stop a row's subprocess after this many seconds")
    p.set_defaults(func=cmd_bench)

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
    p.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--backend", default="auto", help="auto (default) or a backend of lama-fast info")
    p.add_argument("--dtype", type=_dtype, default=torch.float32, help=f"{', '.join(DTYPES)} (default float32)")
    p.add_argument("--hd-strategy", choices=("original", "crop", "resize"),
                   help="large images: the whole image, crops around the holes, or a downscaled copy "
                        "(default: crop, which is the whole image up to --crop-trigger-size)")
    p.add_argument("--crop-margin", type=_int_in(0, None, "crop margin"), help="pixels around each hole (default 128)")
    p.add_argument("--crop-trigger-size", type=_int_in(1, None, "crop trigger size"),
                   help="crop only images whose long side exceeds this (default 800)")
    p.add_argument("--resize-limit", type=_int_in(1, None, "resize limit"),
                   help="long side the resize strategy scales down to (default 1280)")
    p.add_argument("--mask-threshold", type=_mask_threshold,
                   help="a mask pixel is a hole where its value is above this (default 0: any non-zero pixel)")
    p.add_argument("--max-memory", type=_max_memory,
                   help="memory a run may use, e.g. 4G or 512M (default: what the machine has free)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: keep and skip them)")
    p.add_argument("--output-format", choices=("png", "jpg", "same"),
                   help="with an input folder: png (default), jpg, or same as each image")
    p.add_argument("--jpeg-quality", type=_int_in(1, 100, "JPEG quality"), default=95,
                   help="1..100 (default 95)")
    p.add_argument("--png-compress-level", type=_int_in(0, 9, "PNG compression level"),
                   help="0..9 (default 6, as Pillow)")
    p.add_argument("--explain", metavar="PNG",
                   help="one image: draw the regions the chosen strategy sends through the network, with the "
                        "memory estimate, to this PNG (no checkpoint needed without -o)")
    p.set_defaults(func=cmd_inpaint)
    return parser


def _failure(exc: BaseException) -> Tuple[int, str]:
    """The exit code and message of an error that ended a command."""
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, MemoryError):  # the memory guard's InsufficientMemoryError names the numbers
        return EXIT_FAILED, str(exc) or "out of memory"
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return EXIT_FAILED, f"out of memory: {exc}"
    if isinstance(exc, FileNotFoundError) and exc.errno is None:  # lama_fast's own, naming the file
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, (ValueError, TypeError)):  # the library's input checks name the argument or file
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, OSError):
        where = f"{os.fsdecode(exc.filename)}: " if exc.filename is not None else ""
        return EXIT_BAD_INPUT if isinstance(exc, FileNotFoundError) else EXIT_FAILED, where + _reason(exc)
    text = str(exc).strip().splitlines()
    return EXIT_FAILED, (f"unexpected error: {type(exc).__name__}" + (f": {text[0]}" if text else "")
                         + " (--debug prints the traceback)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``lama-fast`` console script; returns the exit code (see README.md)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (Exception, KeyboardInterrupt) as exc:
        code, message = _failure(exc)
        if args.debug:
            traceback.print_exc()
        print(f"lama-fast {args.command}: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
