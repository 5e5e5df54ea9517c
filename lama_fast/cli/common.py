"""What the commands share: the one-line error and exit codes, argument types, path checks, tables."""

from __future__ import annotations

import argparse
import os
import stat
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, NoReturn, Optional, Sequence

import torch

from .._io import file_kind

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}

# The exit codes, as README.md lists them.
EXIT_OK = 0
EXIT_FAILED = 1  # a run that started and failed: a write, memory, a folder item
EXIT_BAD_INPUT = 2  # arguments, unreadable or invalid files, images, checkpoints
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


class CliError(Exception):
    """A user-facing error: printed as one line without a traceback; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, in the form of the other errors (``lama-fast inpaint: ...``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: {message} (see {self.prog} --help)\n")


# --- argument types ------------------------------------------------------------------------------

def parse_sizes(text: str) -> List[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or any(s < 8 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be integers >= 8, got {text!r}")
    return sizes


def dtype_arg(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise argparse.ArgumentTypeError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def device_arg(text: str) -> str:
    """An argparse type: a torch device string (cpu, cuda, cuda:1, ...), kept as given."""
    try:
        torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"device must be a torch device such as cpu, cuda or cuda:1, "
                                         f"got {text!r}") from None
    return text


def int_in(low: int, high: Optional[int], what: str) -> Callable[[str], int]:
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


def positive_float(what: str) -> Callable[[str], float]:
    """An argparse type: a finite number > 0."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (0 < value < float("inf")):
            raise argparse.ArgumentTypeError(f"{what} must be a number > 0, got {text!r}")
        return value

    return parse


def mask_threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"mask threshold must be a number >= 0 (in the mask's units, "
                                         f"0..255 for 8-bit masks), got {text!r}")
    return value


def max_memory(text: str) -> int:
    from ..memory import parse_size

    try:
        return parse_size(text)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def model_options(p: argparse.ArgumentParser, sizes: str) -> None:
    """The options of the commands that run a whole generator: its weights, the sizes, device and dtype."""
    p.add_argument("--checkpoint", help="weights to use (default: seeded random weights in --model's layout)")
    p.add_argument("--model", default="big-lama", choices=("big-lama", "lama-fourier"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes(sizes), help=f"comma-separated (default {sizes})")
    p.add_argument("--device", type=device_arg, default="cpu")
    p.add_argument("--dtype", type=dtype_arg, default=torch.float32)


# --- paths ---------------------------------------------------------------------------------------

def input_file(path, what: str, expected: str) -> None:
    """Refuse, by its stat alone, a path to read that is missing or not a regular file (a FIFO would block)."""
    from ..images import check_regular_file

    try:
        check_regular_file(path, what, expected)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None


def output_file(path: Path, what: str, expected: str, folder_hint: Optional[str] = None) -> None:
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
    output_location(path, what)


def output_location(path: Path, what: str) -> None:
    """Refuse an output whose nearest existing folder above it is a file or is not writable."""
    folder = path.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if os.path.lexists(folder) and not folder.is_dir():
        raise CliError(f"cannot write the {what} {path}: {folder} is a file, not a folder")
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"cannot write the {what} {path}: the folder {folder} is not writable")


def reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


@contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """Report a write that fails (disk full, permissions, read-only file system) as a failed run."""
    try:
        yield
    except OSError as exc:
        raise CliError(f"cannot write the {what} {path}: {reason(exc)}", EXIT_FAILED) from exc


@contextmanager
def reading_checkpoint(path, *also_named) -> Iterator[None]:
    """Name the checkpoint in the first line of every error of reading it (unless it names one of
    ``also_named``, the other files of the command)."""
    from ..checkpoint import CheckpointError

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
        raise CliError(f"cannot read checkpoint {path}: {reason(exc)}") from exc


def checkpoint_file(path) -> None:
    input_file(path, "checkpoint", "a checkpoint file (.ckpt, .pt, .safetensors)")


# --- output --------------------------------------------------------------------------------------

def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from .._info import format_table

    print(format_table(headers, rows))


def progress(message: str) -> None:
    """One line per long step on stderr, so a slow run shows where it is without mixing into the table."""
    print(message, file=sys.stderr, flush=True)


def runnable_backends(device: str, dtype: torch.dtype) -> List[str]:
    """The backends that can run on ``device`` in ``dtype``; each one that cannot is said on stderr, with why."""
    from ..backends import available_backends

    names = []
    for name, why in available_backends(device, dtype).items():
        if why is None:
            names.append(name)
        else:
            print(f"skipping backend {name}: {why}", file=sys.stderr)
    return names
