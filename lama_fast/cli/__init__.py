"""The ``lama-fast`` command: inpaint, serve, bench, parity, info, convert.

One module per command (``info``, ``convert``, ``parity``, ``bench``, ``inpaint``, ``serve``), each with its
``cmd_*`` function and the ``add_parser`` that declares its options; ``common`` holds what they share.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Optional, Sequence, Tuple

import torch

from . import bench, convert, info, inpaint, parity, serve
from .common import DTYPES, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, CliError, Parser, reason
from .inpaint import CHECKPOINT_ENV, WHERE_THE_WEIGHTS_ARE

__all__ = [
    "main", "build_parser", "CliError", "CHECKPOINT_ENV", "WHERE_THE_WEIGHTS_ARE", "DTYPES",
    "EXIT_OK", "EXIT_FAILED", "EXIT_BAD_INPUT", "EXIT_INTERRUPTED",
]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``lama-fast`` command."""
    parser = Parser(prog="lama-fast", description="Fast, checked LaMa inpainting.",
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

    for module in (info, convert, parity, bench, inpaint, serve):
        module.add_parser(add_command)
    return parser


def _with_option(message: str) -> str:
    """A library message that suggests a setting, with the option that sets it on the command line."""
    return message.replace("hd_strategy='resize'", "hd_strategy='resize' (--hd-strategy resize)")


def _failure(exc: BaseException) -> Tuple[int, str]:
    """The exit code and message of an error that ended a command."""
    if isinstance(exc, CliError):
        return exc.code, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, MemoryError):  # the memory guard's InsufficientMemoryError names the numbers
        return EXIT_FAILED, _with_option(str(exc)) or "out of memory"
    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())):
        return EXIT_FAILED, f"out of memory: {exc}"
    if isinstance(exc, FileNotFoundError) and exc.errno is None:  # lama_fast's own, naming the file
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, (ValueError, TypeError)):  # the library's input checks name the argument or file
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, OSError):
        where = f"{os.fsdecode(exc.filename)}: " if exc.filename is not None else ""
        return EXIT_BAD_INPUT if isinstance(exc, FileNotFoundError) else EXIT_FAILED, where + reason(exc)
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
