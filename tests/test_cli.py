"""The lama-fast command line: each subcommand's output and its errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata

import numpy as np
import pytest
import torch
from PIL import Image

import lama_fast
from lama_fast.cli import WHERE_THE_WEIGHTS_ARE, main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def golden_files(golden_dir, golden_case, tmp_path):
    case = golden_case("inpaint_case")
    image, mask = tmp_path / "photo.png", tmp_path / "photo_mask.png"
    Image.fromarray(case["image"].numpy()).save(image)
    Image.fromarray(case["mask"].numpy()).save(mask)
    return golden_dir / "tiny" / "checkpoint.ckpt", image, mask, case


def test_console_script_is_declared():
    scripts = [e for e in metadata.entry_points(group="console_scripts") if e.name == "lama-fast"]
    assert [e.value for e in scripts] == ["lama_fast.cli:main"]


def test_info_lists_versions_and_backends(capsys):
    code, out, _ = run(capsys, "info")
    assert code == 0
    assert "| torch " in out and torch.__version__ in out
    assert "| reference | cpu    | float32  | available" in out
    assert "| reference | cpu    | bfloat16 | the reference model runs in float32 or float64 only" in out
    assert "extension lama_fast._C" in out and "triton kernels" in out
    if lama_fast.available_backends()["cpu"] is None:
        assert re.search(r"\| cpu +\| cpu +\| float32 +\| available", out)
        assert re.search(r"\| winograd 3x3 kernels +\| (avx512|avx2) \(used by the cpu backend in float32\)", out)


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "lama_fast.cli", "info"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "backend" in done.stdout


def test_inpaint_writes_the_golden_image(capsys, golden_files, tmp_path):
    ckpt, image, mask, case = golden_files
    out = tmp_path / "result.png"
    code, stdout, err = run(capsys, "inpaint", str(image), str(mask), "-o", str(out), "--checkpoint", str(ckpt),
                            "--dtype", "float64")
    assert code == 0, err
    assert f"wrote {out}" in stdout
    np.testing.assert_array_equal(np.asarray(Image.open(out)), case["inpainted_uint8"].numpy())
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_inpaint_takes_the_checkpoint_from_the_environment(capsys, golden_files, tmp_path, monkeypatch):
    ckpt, image, mask, _ = golden_files
    monkeypatch.setenv("LAMA_FAST_CHECKPOINT", str(ckpt))
    out = tmp_path / "env.jpg"
    code, _, err = run(capsys, "inpaint", "--image", str(image), "--mask", str(mask), "--output", str(out))
    assert code == 0, err
    assert Image.open(out).format == "JPEG"


def test_inpaint_without_checkpoint_says_where_the_weights_are(capsys, golden_files, tmp_path, monkeypatch):
    _, image, mask, _ = golden_files
    monkeypatch.delenv("LAMA_FAST_CHECKPOINT", raising=False)
    code, _, err = run(capsys, "inpaint", str(image), str(mask), "-o", str(tmp_path / "o.png"))
    assert code == 2
    assert err.strip() == ("lama-fast inpaint: no checkpoint given: pass --checkpoint PATH or set "
                           f"LAMA_FAST_CHECKPOINT. {WHERE_THE_WEIGHTS_ARE}")
    assert "huggingface.co/smartywu/big-lama" in err


def test_inpaint_never_overwrites(capsys, golden_files, tmp_path):
    ckpt, image, mask, _ = golden_files
    before = image.read_bytes()
    code, _, err = run(capsys, "inpaint", str(image), str(mask), "-o", str(image), "--checkpoint", str(ckpt))
    assert code == 2 and f"refusing to overwrite an input file: {image}" in err
    assert image.read_bytes() == before
    existing = tmp_path / "existing.png"
    existing.write_bytes(b"keep me")
    code, _, err = run(capsys, "inpaint", str(image), str(mask), "-o", str(existing), "--checkpoint", str(ckpt))
    assert code == 2 and f"{existing} exists; pass --overwrite to replace it" in err
    assert existing.read_bytes() == b"keep me"
    code, _, err = run(capsys, "inpaint", str(image), str(mask), "-o", str(existing), "--checkpoint", str(ckpt),
                       "--overwrite")
    assert code == 0, err
    assert Image.open(existing).size == (83, 61)


def test_inpaint_reports_unreadable_and_mismatched_files(capsys, golden_files, tmp_path):
    ckpt, image, mask, _ = golden_files
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    code, _, err = run(capsys, "inpaint", str(bad), str(mask), "-o", str(tmp_path / "o.png"), "--checkpoint", str(ckpt))
    assert code == 2 and f"cannot read image {bad}" in err
    small = tmp_path / "small_mask.png"
    Image.new("L", (10, 10)).save(small)
    code, _, err = run(capsys, "inpaint", str(image), str(small), "-o", str(tmp_path / "o.png"), "--checkpoint", str(ckpt))
    assert code == 2 and f"mask {small} is 10x10 but image {image} is 83x61" in err
    code, _, err = run(capsys, "inpaint", str(tmp_path / "nope.png"), str(mask), "-o", str(tmp_path / "o.png"),
                       "--checkpoint", str(ckpt))
    assert code == 2 and f"image {tmp_path / 'nope.png'} does not exist" in err


def test_parity_prints_error_per_backend_and_size(capsys, golden_dir):
    code, out, _ = run(capsys, "parity", "--checkpoint", str(golden_dir / "tiny" / "checkpoint.ckpt"),
                       "--sizes", "16,40")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| reference")]
    assert [row.split("|")[2].strip() for row in rows] == ["16x16", "40x40"]
    for row in rows:
        cells = [c.strip() for c in row.split("|")]
        assert float(cells[4]) <= 1e-5 and cells[7] == "ok"


def test_parity_fails_when_the_tolerance_is_exceeded(capsys, golden_dir):
    code, out, _ = run(capsys, "parity", "--checkpoint", str(golden_dir / "tiny" / "checkpoint.ckpt"),
                       "--sizes", "16", "--tolerance", "0")
    assert code == 1 and "FAIL (> 0)" in out


def test_bench_prints_and_appends_json(capsys, golden_dir, tmp_path):
    results = tmp_path / "results.json"
    for _ in range(2):
        code, out, _ = run(capsys, "bench", "--checkpoint", str(golden_dir / "tiny" / "checkpoint.ckpt"),
                           "--sizes", "16,24", "--repeats", "2", "--backends", "reference",
                           "--json", str(results))
        assert code == 0
    assert "| reference | 16x16" in out and "median s" in out
    rows = json.loads(results.read_text())
    assert len(rows) == 4 and {r["size"] for r in rows} == {16, 24}
    assert all(len(r["runs_s"]) == 2 and r["median_s"] > 0 for r in rows)


def test_bad_sizes_are_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["parity", "--sizes", "abc"])
    assert "sizes must be comma-separated integers, got 'abc'" in capsys.readouterr().err


def test_convert_round_trip(capsys, golden_dir, tmp_path):
    ckpt = golden_dir / "tiny" / "checkpoint.ckpt"
    out = tmp_path / "tiny.safetensors"
    code, stdout, err = run(capsys, "convert", str(ckpt), str(out))
    assert code == 0, err
    from safetensors.torch import load_file

    converted = load_file(str(out))
    source = torch.load(ckpt, weights_only=True)["state_dict"]
    generator_keys = {k[len("generator."):] for k in source if k.startswith("generator.")}
    assert set(converted) == generator_keys
    for key, value in converted.items():
        assert torch.equal(value.float(), source["generator." + key].float())
