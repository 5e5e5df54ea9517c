"""Time and peak memory of loading each hostile checkpoint of tests/hostile.py.

Each file is loaded in a process of its own (a hang or a crash stays in its row), with a time
limit; the row gives the outcome's first line, the seconds and the peak resident memory beyond
what the process held before the load. ``--pythonpath DIR`` loads with another checkout of
lama_fast (for a before/after table).

    python bench/hostile_bench.py --out bench/results/hostile_checkpoints.md
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from lama_fast.benchmark.core import machine_description, run_worker

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from hostile import ATTACKS  # noqa: E402


def run(path: Path, call: str, pythonpath: str, timeout: float) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = run_worker([sys.executable, str(HERE.parent / "tests" / "hostile.py"), str(path), call], timeout, env=env,
                      cwd=tempfile.gettempdir())
    if done.ok:
        return done.row
    if done.timed_out:
        error = f"no answer within {timeout:g} s (killed)"
    else:
        error = f"process died (exit {done.returncode}): {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    return {"error": error, "seconds": None, "peak_extra_mib": None, "process_changed": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythonpath", default="", help="load with the lama_fast found here instead")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--only", default="", help="comma-separated attack names")
    parser.add_argument("--out", help="write a markdown table here as well")
    args = parser.parse_args()
    names = [n for n in ATTACKS if not args.only or n in args.only.split(",")]
    machine = machine_description()
    lines = [f"machine: {machine['cpu']}, {os.cpu_count()} cores, python {machine['python']}; "
             f"loader: {args.pythonpath or 'this checkout'}", "",
             "| attack | outcome | seconds | peak extra MiB |", "|---|---|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            folder = Path(tmp) / name
            folder.mkdir()
            path = ATTACKS[name].make(folder)
            row = run(path, ATTACKS[name].call, args.pythonpath, args.timeout)
            outcome = (row["error"] or "loaded").replace(str(path), "FILE").splitlines()[0].replace("|", "/")
            if len(outcome) > 160:
                outcome = outcome[:157] + "..."
            ran = " **(payload ran)**" if any(p.name == "SENTINEL_RAN" for p in folder.iterdir()) else ""
            ran += " **(process changed)**" if row["process_changed"] else ""
            line = f"| {name} | {outcome}{ran} | {row['seconds'] if row['seconds'] is not None else '-'} | " \
                   f"{row['peak_extra_mib'] if row['peak_extra_mib'] is not None else '-'} |"
            print(line, flush=True)
            lines.append(line)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
