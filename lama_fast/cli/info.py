"""``lama-fast info``: versions, threads, devices and every backend with why it is (not) usable."""

from __future__ import annotations

import argparse
from typing import Callable


def cmd_info(args) -> int:
    from .._info import format_info, info

    print(format_info(info()))
    return 0


def add_parser(add_command: Callable[..., argparse.ArgumentParser]) -> None:
    p = add_command("info", help="versions, threads, devices and every backend with why it is (not) usable")
    p.set_defaults(func=cmd_info)
