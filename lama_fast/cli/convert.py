"""``lama-fast convert``: a checkpoint's generator weights alone, as a .safetensors file."""

from __future__ import annotations

import argparse
import errno
import os
from pathlib import Path
from typing import Callable

from .common import EXIT_FAILED, CliError, checkpoint_file, output_file, reading_checkpoint, reason

# Errors of a write that no choice of path would have avoided: the run failed, the input was fine.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def cmd_convert(args) -> int:
    from ..checkpoint import convert

    source, output = Path(args.input), Path(args.output)
    checkpoint_file(source)
    output_file(output, "output", "give the name of the .safetensors file to write")
    try:
        with reading_checkpoint(source, output):
            convert(source, output)
    except CliError as exc:
        cause = exc.__cause__
        # convert reads, then writes: an OSError of the output's folder (or a full disk) is the write.
        if isinstance(cause, OSError) and _is_write_error(cause, source, output):
            raise CliError(f"cannot write the output {output}: {reason(cause)}", EXIT_FAILED) from cause
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


def add_parser(add_command: Callable[..., argparse.ArgumentParser]) -> None:
    p = add_command("convert", help="write a checkpoint's generator weights alone to a .safetensors file")
    p.add_argument("input")
    p.add_argument("output")
    p.set_defaults(func=cmd_convert)
