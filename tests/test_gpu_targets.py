"""bench/gpu_targets.py: the GPU targets from benchmark rows and test runs (no GPU needed: rows are written here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_targets as gt  # noqa: E402

SIZE_1000 = "1000x750 (752x1000 padded)"


def row(suite: str, shape: str, system: str, dtype: str, median_ms: float, **fields: Any) -> Dict[str, Any]:
    return {"suite": suite, "shape": shape, "system": system, "dtype": dtype, "status": "ok",
            "median_ms": median_ms, **fields}


def measured_rows() -> List[Dict[str, Any]]:
    """Two sizes end to end and two kernel maps, with triton and cuda rows chosen to land either side of each bar."""
    rows = []
    for size, eager, graph in (("512x512", 40.0, 12.0), (SIZE_1000, 60.0, 30.0)):
        rows += [row("e2e", size, "reference eager", "float32", eager),
                 row("e2e", size, "reference eager TF32", "float32", eager / 2),  # never a baseline
                 row("e2e", size, "reference (CUDA graph)", "float32", graph)]
    rows += [
        # 1000x750 bfloat16: triton 60/15 = 4x eager, 30/15 = 2x graph; cuda 60/25 = 2.4x, 1.2x.
        row("e2e", SIZE_1000, "triton backend (CUDA graph)", "bfloat16", 15.0, vs_eager_final_within2=0.9995),
        row("e2e", SIZE_1000, "cuda backend (CUDA graph)", "bfloat16", 25.0, vs_eager_final_within2=0.998),
        # 512x512 bfloat16: triton 40/8 = 5x; cuda 40/20 = 2x.
        row("e2e", "512x512", "triton backend (CUDA graph)", "bfloat16", 8.0),
        row("e2e", "512x512", "cuda backend (CUDA graph)", "bfloat16", 20.0),
        # float32: triton 12/6 = 2x and 30/24 = 1.25x (lowest 1.25); cuda 12/8 = 1.5x and 30/15 = 2x (lowest 1.5).
        row("e2e", "512x512", "triton backend (CUDA graph)", "float32", 6.0),
        row("e2e", SIZE_1000, "triton backend (CUDA graph)", "float32", 24.0),
        row("e2e", "512x512", "cuda backend (CUDA graph)", "float32", 8.0),
        row("e2e", SIZE_1000, "cuda backend (CUDA graph)", "float32", 15.0),
        # The eager-launch rows are not the backends' figures.
        row("e2e", SIZE_1000, "triton backend (eager launches)", "bfloat16", 1.0),
    ]
    for shape, ref_graph in (("1x384x128x128", 0.3), ("1x384x256x256", 1.2)):
        rows += [row("kernel", shape, "reference eager", "float32", 0.5, graph_median_ms=ref_graph),
                 row("kernel", shape, "triton op (fft)", "bfloat16", 0.4, graph_median_ms=0.1),
                 row("kernel", shape, "CUDA ext op", "bfloat16", 0.4, graph_median_ms=0.6)]
    return rows


def test_each_target_has_its_value_and_verdict_per_backend() -> None:
    tests = {"test_triton.py": {"ok": True, "summary": "86 passed in 75.18s"}}
    result = gt.targets(measured_rows(), tests)
    values = {key: {name: entry["value"] for name, entry in target["by_backend"].items()}
              for key, target in result.items() if "by_backend" in target}
    assert values == {
        "bf16_1000x750_vs_eager_fp32": {"triton": 4.0, "cuda": 2.4},
        "bf16_1000x750_vs_reference_graph": {"triton": 2.0, "cuda": 1.2},
        "bf16_1000x750_uint8_within_2": {"triton": 0.9995, "cuda": 0.998},
        "bf16_512_vs_eager_fp32": {"triton": 5.0, "cuda": 2.0},
        "fp32_vs_reference_graph_every_size": {"triton": 1.25, "cuda": 1.5},
        "spectral_op_bf16_128_vs_reference": {"triton": 3.0, "cuda": 0.5},
        "spectral_op_bf16_256_vs_reference": {"triton": 12.0, "cuda": 2.0},
    }
    verdicts = {key: {name: entry["met"] for name, entry in target["by_backend"].items()}
                for key, target in result.items() if "by_backend" in target}
    assert verdicts["bf16_1000x750_vs_reference_graph"] == {"triton": True, "cuda": False}  # the bar itself meets it
    assert verdicts["fp32_vs_reference_graph_every_size"] == {"triton": False, "cuda": True}
    assert verdicts["bf16_1000x750_uint8_within_2"] == {"triton": True, "cuda": False}
    assert {key: target["met"] for key, target in result.items()} == {
        "bf16_1000x750_vs_eager_fp32": True, "bf16_1000x750_vs_reference_graph": True,
        "bf16_1000x750_uint8_within_2": True, "bf16_512_vs_eager_fp32": True,
        "fp32_vs_reference_graph_every_size": True, "spectral_op_bf16_128_vs_reference": True,
        "spectral_op_bf16_256_vs_reference": True, "gpu_tests_pass": True}
    assert result["fp32_vs_reference_graph_every_size"]["sizes"] == ["512x512", SIZE_1000]
    assert result["fp32_vs_reference_graph_every_size"]["per_size"]["512x512"] == {"triton": 2.0, "cuda": 1.5}
    assert gt.auto_choice(result) == "triton"


def test_a_missing_or_failed_row_is_not_measured_never_met() -> None:
    rows = [r for r in measured_rows() if not (r["system"] == "cuda backend (CUDA graph)" and r["dtype"] == "bfloat16")]
    rows.append({**row("e2e", SIZE_1000, "cuda backend (CUDA graph)", "bfloat16", 1.0), "status": "failed: boom"})
    rows = [r for r in rows if not (r["suite"] == "kernel" and r["system"] == "reference eager"
                                    and r["shape"] == "1x384x256x256")]
    result = gt.targets(rows, {})
    assert result["bf16_1000x750_vs_eager_fp32"]["by_backend"]["cuda"] == {"value": None, "met": None}
    assert result["spectral_op_bf16_256_vs_reference"]["by_backend"] == {
        "triton": {"value": None, "met": None}, "cuda": {"value": None, "met": None}}
    assert result["spectral_op_bf16_256_vs_reference"]["met"] is None
    assert result["gpu_tests_pass"]["met"] is None
    # A size where a backend has no float32 row leaves that backend's lowest speed-up unmeasured.
    rows = [r for r in rows if not (r["system"] == "cuda backend (CUDA graph)" and r["shape"] == "512x512")]
    assert gt.targets(rows, {})["fp32_vs_reference_graph_every_size"]["by_backend"]["cuda"] == {
        "value": None, "met": None}
    assert gt.targets([], {})["bf16_512_vs_eager_fp32"]["met"] is None
    assert gt.auto_choice(gt.targets([], {})) is None


def write_runs(out: Path) -> None:
    (out / "pytest_test_cuda_ext.txt").write_text(
        "tests/test_cuda_ext.py::test_a PASSED\n=========== 40 passed, 3 skipped, 2 warnings in 21.50s ===========\n")
    (out / "pytest_test_triton.txt").write_text(
        "tests/test_triton.py::test_b FAILED\n===== 1 failed, 85 passed, 1 error in 75.18s (0:01:15) =====\n")
    (out / "pytest_test_other.txt").write_text("tests/test_other.py::test_c PASSED\n")  # killed: no summary


def test_the_test_runs_are_read_from_their_summaries(tmp_path: Path) -> None:
    write_runs(tmp_path)
    runs = gt.test_outcomes(tmp_path)
    assert runs == {
        "test_cuda_ext.py": {"passed": 40, "failed": 0, "errors": 0, "skipped": 3, "ok": True,
                             "summary": "40 passed, 3 skipped, 2 warnings in 21.50s"},
        "test_other.py": {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "ok": False, "summary": None},
        "test_triton.py": {"passed": 85, "failed": 1, "errors": 1, "skipped": 0, "ok": False,
                           "summary": "1 failed, 85 passed, 1 error in 75.18s (0:01:15)"},
    }
    assert gt.targets([], runs)["gpu_tests_pass"]["met"] is False


def test_the_command_writes_the_dated_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    machine = {"gpu": "NVIDIA H200", "date": "2026-12-04 01:02:03 UTC"}
    (tmp_path / "gpu_nvidia_h200.json").write_text(json.dumps({"machine": machine, "rows": measured_rows()}))
    (tmp_path / "pytest_test_triton.txt").write_text("== 86 passed in 75.18s ==\n")
    assert gt.main(["--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_nvidia_h200_2026-12-04.json").read_text())
    assert report["machine"] == machine and report["rows"] == measured_rows()
    assert report["targets"]["bf16_512_vs_eager_fp32"]["by_backend"]["triton"] == {"value": 5.0, "met": True}
    assert report["tests"]["test_triton.py"]["ok"] is True and report["auto_on_cuda"] == "triton"
    text = (tmp_path / "gpu_nvidia_h200_2026-12-04.md").read_text()
    assert "| bf16_1000x750_vs_eager_fp32 | 3.0 | 4 (met) | 2.4 | yes |" in text
    assert "| gpu_tests_pass | all pass | test_triton.py: 86 passed in 75.18s | | yes |" in text
    assert text in capsys.readouterr().out
    # A second run reads the undated rows file, not its own dated output.
    assert gt.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("gpu_*.json")) == ["gpu_nvidia_h200.json",
                                                                   "gpu_nvidia_h200_2026-12-04.json"]


def test_without_rows_the_command_says_where_it_looked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert gt.main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"gpu_targets: no gpu_<card>.json in {tmp_path}: "
                                       f"run bench/gpu_bench.py --out {tmp_path} first\n")


def test_the_report_lists_the_forward_profile() -> None:
    from gpu_report import markdown

    info = dict(gpu="NVIDIA H200", torch="2", triton="3", cuda="13", cudnn=9, python="3.12", sms=132,
                gpu_memory_gib=139.8, date="2026-12-04")
    kernels = [{"name": "conv_bf16_kernel", "calls": 36, "us": 4200.0}, {"name": "reflect_pad", "calls": 40, "us": 900.0}]
    rows = [{"suite": "e2e_profile", "shape": SIZE_1000, "system": "triton backend (eager launches)",
             "dtype": "bfloat16", "status": "ok", "gpu_ms_total": 5.1, "launches": 76, "kernels": kernels},
            {"suite": "e2e_profile", "shape": SIZE_1000, "system": "cuda backend (eager launches)",
             "dtype": "bfloat16", "status": "skipped: not built"}]
    text = markdown(rows, info, None)
    assert ("- 1000x750 (752x1000 padded) triton backend (eager launches): 5.10 ms of GPU time in 76 launches; "
            "`conv_bf16_kernel` x36 4.20 ms; `reflect_pad` x40 0.90 ms") in text.splitlines()
    assert ("- e2e_profile 1000x750 (752x1000 padded) cuda backend (eager launches) bfloat16: skipped: not built"
            in text.splitlines())


def test_the_variants_gains_are_reported_beside_the_targets(tmp_path: Path) -> None:
    rows = measured_rows() + [
        row("e2e", SIZE_1000, "triton backend, fused layout (CUDA graph)", "bfloat16", 12.0,
            vs_eager_final_within2=0.9991, first_call_s=2.5),
        row("e2e", SIZE_1000, "triton backend, compiled stages (CUDA graph)", "bfloat16", 7.5,
            vs_eager_final_within2=1.0, first_call_s=41.0),
        {**row("e2e", "512x512", "cuda backend, fused layout (CUDA graph)", "bfloat16", 1.0), "status": "failed: x"}]
    assert gt.variant_gains(rows) == {SIZE_1000: {"triton": {
        "fused layout": {"speed_up": 1.25, "within_2": 0.9991, "first_call_s": 2.5},
        "compiled stages": {"speed_up": 2.0, "within_2": 1.0, "first_call_s": 41.0}}}}
    # The targets stay those of the defaults.
    assert gt.targets(rows, {})["bf16_1000x750_vs_eager_fp32"]["by_backend"]["triton"]["value"] == 4.0
    (tmp_path / "gpu_x.json").write_text(json.dumps({"machine": {"date": "2026-12-04 00:00:00 UTC"}, "rows": rows}))
    assert gt.main(["--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "gpu_x_2026-12-04.json").read_text())["variants"] == gt.variant_gains(rows)
    text = (tmp_path / "gpu_x_2026-12-04.md").read_text()
    assert f"- {SIZE_1000} triton fused layout: 1.25x; 0.9991; 2.5 s\n" in text
    assert f"- {SIZE_1000} triton compiled stages: 2.0x; 1.0; 41.0 s\n" in text
