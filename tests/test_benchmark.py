"""The benchmark harness's logic on tiny shapes: systems, folding, rows, parity, cache, reports, CLI."""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from configs import tiny_config
from lama_fast import benchmark as bm
from lama_fast.cli import main
from lama_fast.model.ffc import SpectralTransform
from lama_fast.model.random import randomise_batchnorm
from lama_fast.ops.reference import fourier_unit_reference, spectral_transform_reference


def test_expand_systems_resolves_aliases_per_suite():
    assert bm.expand_systems("e2e", None) == list(bm.E2E_SYSTEMS)
    assert bm.expand_systems("e2e", ["eager", "ours", "openvino", "eager"]) == [
        "eager", "ours-f32", "ours-bf16", "openvino-f32", "openvino-bf16"]
    assert bm.expand_systems("kernels", ["eager", "ours", "compile", "backend:reference"]) == ["eager", "ours"]
    assert bm.expand_systems("e2e", ["backend:reference"]) == ["backend:reference"]
    with pytest.raises(ValueError, match="unknown system 'tensorrt'"):
        bm.expand_systems("e2e", ["tensorrt"])


def test_spectral_transform_flops_match_the_design_figures():
    assert bm.spectral_transform_flops(384, 192, 384, 64, 64) == pytest.approx(1.83e9, rel=1e-3)
    assert bm.spectral_transform_flops(384, 192, 384, 256, 256) == pytest.approx(29.1e9, rel=1e-2)
    assert bm.block_flops("ffc_layer", 64) is None


def test_folded_spectral_weights_reproduce_the_module():
    torch.manual_seed(0)
    st = randomise_batchnorm(SpectralTransform(12, 12)).eval().double()
    x = torch.randn(1, 12, 6, 10, dtype=torch.float64)
    p = {k: v.double() for k, v in bm.fold_spectral_transform(st).items()}
    got = spectral_transform_reference(x, p["w1"], p["b1"], p["w_freq"], p["b_freq"], p["w2"])
    with torch.no_grad():
        want = st(x)
    # The folded weights are float32, so agreement is to float32 rounding.
    assert (got - want).abs().max() < 1e-5 * want.abs().max()


def test_fused_rows_call_the_op_with_folded_weights(monkeypatch):
    """A stand-in for lama_fast.ops.spectral with the op's contract (its float64 reference): the harness's call
    and parity path."""
    stand_in = types.ModuleType("lama_fast.ops.spectral")
    stand_in.fourier_unit = fourier_unit_reference
    stand_in.spectral_transform = spectral_transform_reference
    monkeypatch.setitem(sys.modules, "lama_fast.ops.spectral", stand_in)
    for block in ("fourier_unit", "spectral_transform"):
        row = bm.run_job(_kernel_spec(block, "ours"), isolate=False)
        assert row["status"] == "ok", row["status"]
        assert row["max_abs_err"] < 1e-4 * row["max_abs_ref"]


def test_uint8_agreement_truncates_like_the_pipeline():
    reference = torch.full((1, 3, 2, 2), 0.5, dtype=torch.float64)  # 127.5 -> level 127
    out = reference.clone()
    out[0, 0, 0, 0] += 1.0 / 255  # 128.5 -> 128: one level
    out[0, 1, 1, 1] += 3.0 / 255  # 130.5 -> 130: three levels
    agreement = bm.uint8_agreement(out, reference)
    assert agreement["u8_max_diff"] == 3
    assert agreement["u8_within1"] == 0.75 and agreement["u8_within2"] == 0.75
    assert bm.to_uint8_image(torch.tensor([-0.1, 0.9999, 1.2])).tolist() == [0, 254, 255]


def _kernel_spec(block, system, size=8, **extra):
    return {"job": "kernel", "suite": "kernels", "block": block, "size": size, "system": system,
            "shape": bm.kernel_shape(block, size), "dtype": "float32", "repeats": 2, "warmup": 1, "seed": 0,
            "parity": True, "run_id": "test", **extra}


@pytest.mark.parametrize("block", bm.KERNEL_BLOCKS)
def test_kernel_rows_in_process(block):
    eager = bm.run_job(_kernel_spec(block, "eager"), isolate=False)
    assert eager["status"] == "ok", eager["status"]
    assert len(eager["runs_s"]) == 2 and eager["median_s"] > 0 and eager["spread_s"] >= 0
    assert eager["max_abs_err"] < 1e-4 * eager["max_abs_ref"] and eager["max_abs_ref"] > 0.1
    assert eager["peak_rss_bytes"] is None  # memory figures need a process of the row's own
    ours = bm.run_job(_kernel_spec(block, "ours"), isolate=False)
    assert ours["status"] == "ok" or ours["status"].startswith("unavailable: "), ours["status"]


def test_isolated_row_has_its_own_peak_memory():
    row = bm.run_job(_kernel_spec("fourier_unit", "channels_last"), isolate=True)
    assert row["status"] == "ok", row["status"]
    assert row["isolated"] and row["peak_rss_bytes"] >= row["rss_before_bytes"] > 0


def test_broken_job_becomes_an_error_row():
    row = bm.run_job(_kernel_spec("no_such_block", "eager"), isolate=False)
    assert row["status"].startswith("error: ValueError: unknown kernel block")


def test_missing_peer_gives_an_unavailable_row(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)
    spec = {"job": "e2e", "suite": "e2e", "block": "generator", "size": 16, "system": "openvino-f32",
            "dtype": "float32", "model": tiny_config(), "seed": 0, "repeats": 1, "warmup": 1,
            "parity": True, "cache_dir": str(tmp_path)}
    row = bm.run_job(spec, isolate=False)
    assert row["status"] == f"unavailable: openvino is not installed ({bm.BENCH_EXTRA})"


def test_e2e_run_parity_cache_and_speedups(tmp_path):
    config = bm.BenchConfig(model=tiny_config(), repeats=2, warmup=1, isolate=False, cache_dir=str(tmp_path))
    messages = []
    plan = [(32, ["channels_last", "eager", "backend:reference"])]
    rows = bm.run_benchmarks((), plan, config, progress=messages.append)
    assert [r["system"] for r in rows] == ["eager", "channels_last", "backend:reference"]
    assert any("expected duration" in m for m in messages)
    for row in rows:
        assert row["status"] == "ok", row["status"]
        assert row["max_abs_err"] < 1e-5 and row["output_std"] > 0
        assert row["u8_max_diff"] <= 1 and row["u8_within1"] == 1.0
        assert row["machine"]["cpu_flags"] and row["run_id"] == rows[0]["run_id"]
    assert rows[0]["speedup_vs_eager"] == 1.0 and "speedup_vs_compile" not in rows[0]
    paths = bm.reference_cache_paths(tmp_path, tiny_config(), None, 0, 32)
    assert paths["float64"].is_file() and paths["float32"].is_file()
    again = bm.run_job({"job": "reference", "size": 32, "model": tiny_config(), "seed": 0,
                        "cache_dir": str(tmp_path), "need_float32": True}, isolate=False)
    assert again["computed"] == []


def _row(system, size, median, **extra):
    return {"suite": "e2e", "block": "generator", "size": size, "system": system, "dtype": "float32",
            "status": "ok", "median_s": median, "first_call_s": median, "spread_s": 0.0, "run_id": "r",
            "machine": {"cpu": "Test CPU", "threads": "2", "torch": "x"}, **extra}


def test_speedups_markdown_and_plot(tmp_path):
    rows = [_row("eager", 512, 3.0), _row("compile", 512, 2.0), _row("ours-f32", 512, 1.0),
            _row("eager", 1024, 12.0), {**_row("onnxruntime", 1024, None), "status": "unavailable: not here"}]
    bm.add_speedups(rows)
    assert rows[2]["speedup_vs_eager"] == 3.0 and rows[2]["speedup_vs_compile"] == 2.0
    report = bm.markdown_report(rows)
    assert "## End to end" in report and "| ours-f32 | 512² | float32 |" in report
    assert "unavailable: not here" in report and "Test CPU" in report
    pytest.importorskip("matplotlib")
    assert bm.plot_e2e(rows, tmp_path / "e2e.png")
    assert (tmp_path / "e2e.png").read_bytes()[:4] == b"\x89PNG"


def test_estimate_grows_with_size():
    config = bm.BenchConfig(parity=False)
    small = bm.estimate_seconds([64], [(512, ["eager"])], config)
    large = bm.estimate_seconds([64], [(2048, ["eager"])], config)
    assert 0 < small < large


def test_cli_kernel_suite_writes_json_and_markdown(tmp_path, capsys):
    results, report = tmp_path / "rows.json", tmp_path / "report.md"
    code = main(["bench", "--suite", "kernels", "--sizes", "8", "--systems", "eager", "--repeats", "1",
                 "--in-process", "--json", str(results), "--markdown", str(report)])
    assert code == 0
    rows = json.loads(results.read_text())
    assert [(r["block"], r["system"]) for r in rows] == [(b, "eager") for b in bm.KERNEL_BLOCKS]
    assert "## Kernels" in report.read_text() and "## Kernels" in capsys.readouterr().out


def test_cli_rejects_suite_options_without_a_suite(capsys):
    assert main(["bench", "--systems", "eager"]) == 2
    assert "go with --suite" in capsys.readouterr().err


def test_worker_process_rows_exits_and_time_limit():
    from lama_fast.benchmark.core import run_worker

    said = run_worker([sys.executable, "-c", "print('a line'); print('{\"a\": 1}'); print('after')"])
    assert said.ok and said.row == {"a": 1} and said.failure(None) is None
    silent = run_worker([sys.executable, "-c", "print('no row')"])
    assert not silent.ok and silent.failure(None) == "the worker wrote no row"
    exited = run_worker([sys.executable, "-c", "import sys; print('{}'); sys.exit(3)"])
    assert exited.failure(None) == "the worker exited with status 3"
    slow = run_worker([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5)
    assert slow.timed_out and slow.failure(0.5) == "the worker ran past 0.5 s and was stopped"
