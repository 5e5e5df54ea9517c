"""The worker that runs one isolated job of ``lama-fast bench``:

    python -m lama_fast.benchmark --job SPEC.json [--out ROW.json]

prints the row as the last line of its output (and writes it to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

from .core import print_row
from .run import execute_job


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the job of ``--job`` in this process and answer with its row."""
    parser = argparse.ArgumentParser(description="Run one benchmark job (the harness's isolated worker).")
    parser.add_argument("--job", required=True, help="JSON file with the job's spec")
    parser.add_argument("--out", help="also write the row as JSON to this file")
    args = parser.parse_args(argv)
    with open(args.job) as f:
        spec = json.load(f)
    row = execute_job(spec)
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(row, f)
        os.replace(tmp, args.out)
    print_row(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
