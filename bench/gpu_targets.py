#!/usr/bin/env python3
"""The GPU targets, worked out from a GPU benchmark's rows and the GPU test runs: each with its bar, the
value measured per backend (triton, cuda) and whether it is met.

    python bench/gpu_targets.py --out DIR

reads DIR/gpu_<card>.json (bench/gpu_bench.py's rows) and DIR/pytest_test_*.txt (the test runs of
bench/gpu_check.sh), writes DIR/gpu_<card>_<date>.json (machine, rows, tests, targets) and the targets
table as DIR/gpu_<card>_<date>.md, and prints the table; beside the targets, what the GPU generators'
opt-in variants (``set_layout``, ``set_compiled``) gain in bfloat16 at each size.  A target whose rows are missing (skipped, failed,
not run) is "not measured" (met: null), never met.

Speeds compare medians: our backends replayed in a CUDA graph (their default on CUDA) against eager fp32
(``reference eager``: PyTorch's default TF32 policy) and against the reference replayed in a CUDA graph;
the spectral op's rows compare CUDA-graph medians on both sides.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

BACKENDS = {"triton": "triton backend (CUDA graph)", "cuda": "cuda backend (CUDA graph)"}
OPS = {"triton": "triton op (fft)", "cuda": "CUDA ext op"}
# The GPU generators' opt-in variants (bench/gpu_common.py's VARIANTS), reported beside the targets.
VARIANTS = ("fused layout", "dft-tc route", "compiled stages")
REFERENCE_EAGER = "reference eager"
REFERENCE_GRAPH = "reference (CUDA graph)"
SIZE_1000 = "1000x750 (752x1000 padded)"
# The bars: end to end and of the spectral op alone.
BF16_1000_VS_EAGER = 3.0
BF16_1000_VS_GRAPH = 2.0
BF16_1000_WITHIN2 = 0.999
BF16_512_VS_EAGER = 4.0
FP32_VS_GRAPH = 1.5
OP_BF16_VS_REFERENCE = 3.0
OP_MAPS = ("1x384x128x128", "1x384x256x256")


def _ok(rows: Sequence[Dict[str, Any]], suite: str, shape: str, system: str, dtype: str) -> Optional[Dict[str, Any]]:
    """The measured row (status ok) of ``system`` in ``dtype`` at ``shape``, or None."""
    for row in rows:
        if (row.get("suite"), row.get("shape"), row.get("system"), row.get("dtype")) == (suite, shape, system, dtype) \
                and row.get("status", "ok") == "ok" and row.get("median_ms"):
            return row
    return None


def _ratio(slow: Optional[float], fast: Optional[float]) -> Optional[float]:
    return None if not slow or not fast else slow / fast


def _verdict(value: Optional[float], bar: float) -> Optional[bool]:
    return None if value is None else value >= bar


def _target(what: str, bar: float, values: Dict[str, Optional[float]], **detail: Any) -> Dict[str, Any]:
    """One target: per backend its value (to 4 decimals, as judged) and whether it meets ``bar``; met when one
    backend does (None when no backend was measured)."""
    rounded = {name: None if value is None else round(value, 4) for name, value in values.items()}
    by_backend = {name: {"value": value, "met": _verdict(value, bar)} for name, value in rounded.items()}
    verdicts = [entry["met"] for entry in by_backend.values() if entry["met"] is not None]
    return {"what": what, "bar": bar, "by_backend": by_backend, "met": any(verdicts) if verdicts else None, **detail}


def _e2e_speedup(rows, shape: str, dtype: str, against: str) -> Dict[str, Optional[float]]:
    base = _ok(rows, "e2e", shape, against, "float32")
    return {name: _ratio(base and base["median_ms"], (_ok(rows, "e2e", shape, system, dtype) or {}).get("median_ms"))
            for name, system in BACKENDS.items()}


def e2e_sizes(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """The end-to-end sizes with a measured reference CUDA-graph row, in the rows' order."""
    sizes: List[str] = []
    for row in rows:
        if row.get("suite") == "e2e" and _ok(rows, "e2e", row["shape"], REFERENCE_GRAPH, "float32") \
                and row["shape"] not in sizes:
            sizes.append(row["shape"])
    return sizes


def test_outcomes(out: Path) -> Dict[str, Dict[str, Any]]:
    """Per pytest_test_*.txt in ``out``: the counts of its last summary line (none when it has no summary: a
    run killed at its time limit)."""
    outcomes: Dict[str, Dict[str, Any]] = {}
    for path in sorted(out.glob("pytest_test_*.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        summaries = [line for line in text.splitlines()
                     if re.search(r"\d+ (passed|failed|errors?)\b", line) and " in " in line]
        counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
        if summaries:
            for number, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)\b", summaries[-1]):
                counts["errors" if word.startswith("error") else word] += int(number)
        name = path.stem[len("pytest_"):] + ".py"
        outcomes[name] = {**counts, "summary": summaries[-1].strip("= ") if summaries else None,
                          "ok": bool(summaries) and counts["passed"] > 0 and not counts["failed"] and not counts["errors"]}
    return outcomes


def targets(rows: Sequence[Dict[str, Any]], tests: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Every target of the GPU work, from the benchmark's rows and the test outcomes."""
    result: Dict[str, Any] = {}
    result["bf16_1000x750_vs_eager_fp32"] = _target(
        "bfloat16 end to end at 1000x750 (CUDA graph) against eager float32: speed-up", BF16_1000_VS_EAGER,
        _e2e_speedup(rows, SIZE_1000, "bfloat16", REFERENCE_EAGER))
    result["bf16_1000x750_vs_reference_graph"] = _target(
        "bfloat16 end to end at 1000x750 (CUDA graph) against the reference in a CUDA graph: speed-up",
        BF16_1000_VS_GRAPH, _e2e_speedup(rows, SIZE_1000, "bfloat16", REFERENCE_GRAPH))
    result["bf16_1000x750_uint8_within_2"] = _target(
        "bfloat16 at 1000x750: share of the final image's uint8 pixels within 2 levels of eager float32's",
        BF16_1000_WITHIN2, {name: (_ok(rows, "e2e", SIZE_1000, system, "bfloat16") or {}).get("vs_eager_final_within2")
                            for name, system in BACKENDS.items()})
    result["bf16_512_vs_eager_fp32"] = _target(
        "bfloat16 end to end at 512x512 (CUDA graph) against eager float32: speed-up", BF16_512_VS_EAGER,
        _e2e_speedup(rows, "512x512", "bfloat16", REFERENCE_EAGER))
    sizes = e2e_sizes(rows)
    per_size = {size: _e2e_speedup(rows, size, "float32", REFERENCE_GRAPH) for size in sizes}
    lowest: Dict[str, Optional[float]] = {}
    for name in BACKENDS:
        values = [per_size[size][name] for size in sizes]
        lowest[name] = None if not values or None in values else min(values)
    result["fp32_vs_reference_graph_every_size"] = _target(
        "float32 under PyTorch's default TF32 policy (CUDA graph) against the reference in a CUDA graph: the "
        "lowest speed-up over the sizes measured", FP32_VS_GRAPH, lowest, sizes=sizes,
        per_size={size: {name: None if v is None else round(v, 4) for name, v in values.items()}
                  for size, values in per_size.items()})
    for shape in OP_MAPS:
        base = _ok(rows, "kernel", shape, REFERENCE_EAGER, "float32")
        values = {}
        for name, system in OPS.items():
            row = _ok(rows, "kernel", shape, system, "bfloat16")
            values[name] = _ratio(base and base.get("graph_median_ms"), row and row.get("graph_median_ms"))
        side = shape.rsplit("x", 1)[1]
        result[f"spectral_op_bf16_{side}_vs_reference"] = _target(
            f"the spectral op in bfloat16 on the {side}^2 map of 384 channels against the reference module "
            "(float32), both in CUDA graphs: speed-up", OP_BF16_VS_REFERENCE, values)
    runs = list(tests.values())
    result["gpu_tests_pass"] = {
        "what": "every GPU test run passed (tests/test_cuda_ext.py, tests/test_triton.py)", "bar": "all pass",
        "runs": tests, "met": (all(run["ok"] for run in runs) if runs else None)}
    return result


def variant_gains(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Not targets: per end-to-end size, backend and opt-in variant (VARIANTS), the bfloat16 default's median
    over the variant's (above 1: the variant is faster), the variant's share of pixels within 2 levels of eager
    float32 and its first call's seconds (compilation included)."""
    gains: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for size in e2e_sizes(rows):
        for name, system in BACKENDS.items():
            default = _ok(rows, "e2e", size, system, "bfloat16")
            for variant in VARIANTS:
                row = _ok(rows, "e2e", size, f"{name} backend, {variant} (CUDA graph)", "bfloat16")
                if row is None:
                    continue
                ratio = _ratio(default and default["median_ms"], row["median_ms"])
                gains.setdefault(size, {}).setdefault(name, {})[variant] = {
                    "speed_up": None if ratio is None else round(ratio, 4),
                    "within_2": row.get("vs_eager_final_within2"), "first_call_s": row.get("first_call_s")}
    return gains


def auto_choice(result: Dict[str, Any]) -> Optional[str]:
    """The backend meeting the most speed targets (ties: the faster bfloat16 at 1000x750); None when nothing was
    measured."""
    scores: Dict[str, List[float]] = {}
    for name in BACKENDS:
        met = sum(1 for target in result.values() if target.get("by_backend", {}).get(name, {}).get("met"))
        speed = result["bf16_1000x750_vs_eager_fp32"]["by_backend"][name]["value"]
        if speed is not None:
            scores[name] = [met, speed]
    return max(scores, key=lambda name: scores[name]) if scores else None


def table(result: Dict[str, Any]) -> str:
    lines = ["| target | bar | triton | cuda | met |", "|---|---|---|---|---|"]

    def cell(entry: Dict[str, Any]) -> str:
        if entry["value"] is None:
            return "not measured"
        return f"{entry['value']:.3g}" + (" (met)" if entry["met"] else "")

    for key, target in result.items():
        met = {True: "yes", False: "no", None: "not measured"}[target["met"]]
        if "by_backend" in target:
            lines.append(f"| {key} | {target['bar']} | {cell(target['by_backend']['triton'])} | "
                         f"{cell(target['by_backend']['cuda'])} | {met} |")
        else:
            runs = "; ".join(f"{name}: {run['summary'] or 'no summary (killed?)'}" for name, run in target["runs"].items())
            lines.append(f"| {key} | {target['bar']} | {runs or 'no test run found'} | | {met} |")
    return "\n".join(lines)


def _rows_file(out: Path) -> Path:
    candidates = [p for p in out.glob("gpu_*.json") if not re.search(r"_\d{4}-\d{2}-\d{2}\.json$", p.name)]
    if not candidates:
        raise FileNotFoundError(f"no gpu_<card>.json in {out}: run bench/gpu_bench.py --out {out} first")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the folder of gpu_<card>.json and pytest_test_*.txt")
    parser.add_argument("--rows", default=None, help="the rows file (default: the newest gpu_<card>.json in --out)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        source = Path(args.rows) if args.rows else _rows_file(out)
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"gpu_targets: {error}", file=sys.stderr)
        return 2
    rows, machine = data.get("rows", []), data.get("machine", {})
    tests = test_outcomes(out)
    result = targets(rows, tests)
    date = str(machine.get("date", ""))[:10] or "undated"
    stem = f"{source.stem}_{date}"
    gains = variant_gains(rows)
    report = {**data, "tests": tests, "targets": result, "auto_on_cuda": auto_choice(result), "variants": gains}
    (out / f"{stem}.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    text = (f"# GPU targets: {machine.get('gpu', '?')}, {machine.get('date', '?')}\n\n{table(result)}\n\n"
            f"Backend meeting the most targets: {report['auto_on_cuda'] or 'none measured'}\n")
    if gains:
        text += ("\nThe opt-in variants in bfloat16 (the default's median over the variant's; share of pixels within "
                 "2 levels of eager float32; first call):\n\n")
        text += "".join(f"- {size} {name} {variant}: {entry['speed_up']}x; {entry['within_2']}; "
                        f"{entry['first_call_s']} s\n"
                        for size, by_name in gains.items() for name, by_variant in by_name.items()
                        for variant, entry in by_variant.items())
    (out / f"{stem}.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"wrote {out / (stem + '.json')} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
