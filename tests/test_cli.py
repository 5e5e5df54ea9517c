"""The lama-fast command line: each subcommand's output and its errors."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lama_fast
import lama_fast.model.random
from configs import TINY_CONFIG
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


def inpaint_golden(capsys, golden_files, out, *argv):
    """``lama-fast inpaint`` of the golden picture under its mask into ``out`` with the golden checkpoint."""
    ckpt, image, mask, _ = golden_files
    return run(capsys, "inpaint", str(image), str(mask), "-o", str(out), "--checkpoint", str(ckpt), *argv)



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
    case = golden_files[3]
    out = tmp_path / "result.png"
    code, stdout, err = inpaint_golden(capsys, golden_files, out, "--dtype", "float64")
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
    image = golden_files[1]
    before = image.read_bytes()
    code, _, err = inpaint_golden(capsys, golden_files, image)
    assert code == 2 and f"refusing to overwrite an input file: {image}" in err
    assert image.read_bytes() == before
    existing = tmp_path / "existing.png"
    existing.write_bytes(b"keep me")
    code, _, err = inpaint_golden(capsys, golden_files, existing)
    assert code == 2 and f"{existing} exists; pass --overwrite to replace it" in err
    assert existing.read_bytes() == b"keep me"
    code, _, err = inpaint_golden(capsys, golden_files, existing, "--overwrite")
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


# --- errors: one line, an exit code, a traceback only with --debug --------------------------------

@pytest.fixture()
def fails_if_it_hangs():
    """Turn a read that blocks (a FIFO opened for reading) into a failure after a few seconds."""

    def on_alarm(signum, frame):
        # Not an OSError, which the code under test might catch and report.
        pytest.fail("blocked on a path that is not a regular file")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def one_line(err: str) -> str:
    """The whole of stderr, which must be a single line without a traceback."""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def write_image(path, side):
    rng = np.random.default_rng(side)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    mask = np.zeros((side, side), np.uint8)
    mask[side // 3: 2 * side // 3, side // 3: 2 * side // 3] = 255
    mask_path = path.with_name(path.stem + "_mask.png")
    Image.fromarray(mask).save(mask_path)
    return path, mask_path


def test_an_unknown_device_is_a_bad_argument(capsys, golden_files, tmp_path):
    ckpt, image, mask, _ = golden_files
    with pytest.raises(SystemExit) as stopped:
        main(["inpaint", str(image), str(mask), "-o", str(tmp_path / "o.png"), "--checkpoint", str(ckpt),
              "--device", "foo"])
    assert stopped.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "lama-fast inpaint: argument --device: device must be a torch device such as cpu, cuda or cuda:1, "
        "got 'foo' (see lama-fast inpaint --help)")
    with pytest.raises(SystemExit) as stopped:
        main(["parity", "--device", "gpu0"])
    assert stopped.value.code == 2
    assert "argument --device: device must be a torch device" in one_line(capsys.readouterr().err)


def assert_outputs_refused(capsys, golden_files, image_output, weights_output, why):
    """inpaint -o image_output and convert to weights_output both fail as bad input, before running,
    with the one line ``cannot write the output OUTPUT: why``."""
    ckpt, image, mask, _ = golden_files
    for argv, out in ((["inpaint", str(image), str(mask), "-o", str(image_output), "--checkpoint", str(ckpt)],
                       image_output),
                      (["convert", str(ckpt), str(weights_output)], weights_output)):
        code, _, err = run(capsys, *argv)
        assert code == 2
        assert one_line(err) == f"lama-fast {argv[0]}: cannot write the output {out}: {why}"


def test_an_output_under_a_file_is_refused_before_the_run(capsys, golden_files, tmp_path):
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("a file")
    assert_outputs_refused(capsys, golden_files, blocker / "out.png", blocker / "a" / "b.safetensors",
                           f"{blocker} is a file, not a folder")
    assert blocker.read_text() == "a file"


def test_an_existing_folder_as_the_output_of_one_image_asks_for_a_file_name(capsys, golden_files, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    for extra in ([], ["--overwrite"]):
        code, _, err = inpaint_golden(capsys, golden_files, folder, *extra)
        assert code == 2
        assert one_line(err) == (f"lama-fast inpaint: the output {folder} is a folder; -o takes the file to write "
                                 f"the result to, e.g. -o {folder / 'photo_inpainted.png'}")
    code, _, err = inpaint_golden(capsys, golden_files, "/dev/null", "--overwrite")
    assert code == 2
    assert one_line(err) == ("lama-fast inpaint: the output /dev/null is not a regular file (a character device); "
                             "-o takes the name of the image file to write")
    code, _, err = run(capsys, "convert", str(golden_files[0]), str(folder))
    assert code == 2
    assert one_line(err) == (f"lama-fast convert: the output {folder} is a folder; give the name of the "
                             f".safetensors file to write")
    assert list(folder.iterdir()) == []


def _full_disk(error_number):
    """An os.replace that fails as a full (or read-only) disk fails the last step of a write."""

    def replace(src, dst, **kwargs):
        raise OSError(error_number, os.strerror(error_number), str(src))

    return replace


@pytest.mark.parametrize("error_number", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
def test_a_write_that_fails_is_a_failed_run(capsys, golden_files, tmp_path, monkeypatch, error_number):
    ckpt = golden_files[0]
    out = tmp_path / "out" / "result.png"
    monkeypatch.setattr(os, "replace", _full_disk(error_number))
    code, stdout, err = inpaint_golden(capsys, golden_files, out, "--backend", "reference")
    assert code == 1 and stdout == ""
    assert one_line(err) == f"lama-fast inpaint: cannot write the output {out}: {os.strerror(error_number)}"
    assert list(out.parent.iterdir()) == [], "the temporary file is removed"
    converted = tmp_path / "tiny.safetensors"
    code, stdout, err = run(capsys, "convert", str(ckpt), str(converted))
    assert code == 1 and stdout == ""
    assert one_line(err) == f"lama-fast convert: cannot write the output {converted}: {os.strerror(error_number)}"
    assert [p.name for p in tmp_path.iterdir() if p.suffix in (".tmp", ".safetensors")] == []


def test_an_unwritable_folder_is_refused_before_the_run(capsys, golden_files, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root writes anywhere but on a read-only file system, which access() reports
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real_access(path, mode))
    else:
        locked.chmod(0o555)
    try:
        assert_outputs_refused(capsys, golden_files, locked / "o.png", locked / "sub" / "w.safetensors",
                               f"the folder {locked} is not writable")
    finally:
        locked.chmod(0o755)
    assert list(locked.iterdir()) == []


def test_an_image_too_small_for_the_model_names_the_file(capsys, golden_files, tmp_path):
    ckpt = golden_files[0]  # three downsamplings, as big-lama: 9 pixels at least
    small, small_mask = write_image(tmp_path / "small.png", 8)
    code, _, err = run(capsys, "inpaint", str(small), str(small_mask), "-o", str(tmp_path / "o.png"),
                       "--checkpoint", str(ckpt))
    assert code == 2
    assert one_line(err) == (f"lama-fast inpaint: cannot inpaint {small}: image is 8x8 pixels; this model needs at "
                             f"least 9 pixels on each side")
    assert not (tmp_path / "o.png").exists()
    fits, fits_mask = write_image(tmp_path / "fits.png", 9)
    code, _, err = run(capsys, "inpaint", str(fits), str(fits_mask), "-o", str(tmp_path / "o.png"),
                       "--checkpoint", str(ckpt))
    assert code == 0, err
    assert Image.open(tmp_path / "o.png").size == (9, 9)


def test_a_too_small_image_in_a_folder_fails_that_item(capsys, golden_files, tmp_path):
    ckpt = golden_files[0]
    folder = tmp_path / "in"
    folder.mkdir()
    small, _ = write_image(folder / "small.png", 8)
    write_image(folder / "fits.png", 9)
    code, stdout, err = run(capsys, "inpaint", str(folder), "-o", str(tmp_path / "out"), "--checkpoint", str(ckpt),
                            "--backend", "reference")
    assert code == 1
    assert "summary: 1 done, 0 skipped (output exists), 1 failed" in stdout
    assert (f"failed: cannot inpaint {small}: image is 8x8 pixels; this model needs at least 9 pixels on each side"
            in err.splitlines())
    assert "Traceback" not in err


def test_paths_that_are_not_regular_files_are_refused_without_reading(capsys, golden_files, tmp_path,
                                                                       fails_if_it_hangs):
    ckpt, image, mask, _ = golden_files
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    out = str(tmp_path / "o.png")
    cases = [
        (["inpaint", str(fifo), str(mask), "-o", out, "--checkpoint", str(ckpt)],
         f"lama-fast inpaint: image {fifo} is not a regular file (a FIFO); give an image file"),
        (["inpaint", str(image), str(fifo), "-o", out, "--checkpoint", str(ckpt)],
         f"lama-fast inpaint: mask {fifo} is not a regular file (a FIFO); give an image file"),
        (["inpaint", str(image), str(tmp_path), "-o", out, "--checkpoint", str(ckpt)],
         f"lama-fast inpaint: mask {tmp_path} is not a regular file (a directory); give an image file"),
        (["inpaint", str(image), "/dev/zero", "-o", out, "--checkpoint", str(ckpt)],
         "lama-fast inpaint: mask /dev/zero is not a regular file (a character device); give an image file"),
        (["inpaint", str(image), str(mask), "-o", out, "--checkpoint", str(fifo)],
         f"lama-fast inpaint: checkpoint {fifo} is not a regular file (a FIFO); give a checkpoint file "
         f"(.ckpt, .pt, .safetensors)"),
        (["inpaint", str(image), str(mask), "-o", out, "--checkpoint", "/dev/zero"],
         "lama-fast inpaint: checkpoint /dev/zero is not a regular file (a character device); give a checkpoint "
         "file (.ckpt, .pt, .safetensors)"),
        (["convert", str(fifo), str(tmp_path / "c.safetensors")],
         f"lama-fast convert: checkpoint {fifo} is not a regular file (a FIFO); give a checkpoint file "
         f"(.ckpt, .pt, .safetensors)"),
        (["parity", "--checkpoint", str(fifo)],
         f"lama-fast parity: checkpoint {fifo} is not a regular file (a FIFO); give a checkpoint file "
         f"(.ckpt, .pt, .safetensors)"),
        (["bench", "--sizes", "16", "--json", str(fifo)],
         f"lama-fast bench: --json file {fifo} is not a regular file (a FIFO); give a JSON file to append the "
         f"rows to"),
    ]
    for argv, expected in cases:
        code, _, err = run(capsys, *argv)
        assert (code, one_line(err)) == (2, expected)
    assert not os.path.exists(out)


def test_a_missing_or_broken_checkpoint_is_bad_input(capsys, golden_files, tmp_path):
    _, image, mask, _ = golden_files
    out = str(tmp_path / "o.png")
    missing = tmp_path / "nope.ckpt"
    code, _, err = run(capsys, "inpaint", str(image), str(mask), "-o", out, "--checkpoint", str(missing))
    assert (code, one_line(err)) == (2, f"lama-fast inpaint: checkpoint {missing} does not exist")
    # An image is no checkpoint; the loader words the reason, the first line names the file.
    code, _, err = run(capsys, "inpaint", str(image), str(mask), "-o", out, "--checkpoint", str(image))
    assert code == 2 and one_line(err).startswith(f"lama-fast inpaint: {image}: ")


@pytest.mark.parametrize("depth", [30_000, 100_000])
def test_a_checkpoint_with_a_deeply_nested_config_is_bad_input(capsys, tmp_path, depth):
    from safetensors.torch import save_file

    deep = tmp_path / "deep.safetensors"
    save_file({"model.1.weight": torch.zeros(1)}, str(deep), metadata={"lama_fast_config": "[" * depth + "]" * depth})
    code, _, err = run(capsys, "convert", str(deep), str(tmp_path / "out.safetensors"))
    assert code == 2
    assert one_line(err).startswith(f"lama-fast convert: {deep}: ")
    assert not (tmp_path / "out.safetensors").exists()


def test_debug_prints_the_traceback_before_the_line(capsys, golden_files, tmp_path):
    ckpt = golden_files[0]
    small, small_mask = write_image(tmp_path / "small.png", 8)
    line = (f"lama-fast inpaint: cannot inpaint {small}: image is 8x8 pixels; this model needs at least 9 pixels "
            f"on each side")
    base = ["inpaint", str(small), str(small_mask), "-o", str(tmp_path / "o.png"), "--checkpoint", str(ckpt),
            "--backend", "reference"]
    for argv in (["--debug", *base], [*base, "--debug"]):
        code, _, err = run(capsys, *argv)
        assert code == 2
        assert err.startswith("Traceback (most recent call last):")
        assert "ValueError: image is 8x8 pixels" in err
        assert err.splitlines()[-1] == line
    code, _, err = run(capsys, *base)
    assert (code, one_line(err)) == (2, line)


def test_an_unexpected_error_is_one_line_and_ctrl_c_is_130(capsys, golden_files, tmp_path, monkeypatch):
    ckpt, image, mask, _ = golden_files
    argv = ["inpaint", str(image), str(mask), "-o", str(tmp_path / "o.png"), "--checkpoint", str(ckpt)]

    def broken(*args, **kwargs):
        raise RuntimeError("kernel exploded\nsecond line")

    monkeypatch.setattr(lama_fast, "load", broken)
    code, _, err = run(capsys, *argv)
    assert (code, one_line(err)) == (
        1, "lama-fast inpaint: unexpected error: RuntimeError: kernel exploded (--debug prints the traceback)")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lama_fast, "load", interrupted)
    code, _, err = run(capsys, *argv)
    assert (code, one_line(err)) == (130, "lama-fast inpaint: interrupted")


def test_small_memory_limits_are_written_in_kib_and_bytes(capsys, golden_files, tmp_path):
    from lama_fast.memory import format_bytes

    assert [format_bytes(n) for n in (0, 1, 1023, 1024, 1536, 5 << 20, 3 << 30)] == [
        "0 bytes", "1 byte", "1023 bytes", "1 KiB", "2 KiB", "5 MiB", "3.00 GiB"]
    code, _, err = inpaint_golden(capsys, golden_files, tmp_path / "o.png", "--max-memory", "1K")
    assert code == 1
    assert "more than the 1 KiB of max_memory" in one_line(err)


def test_the_wrote_line_names_the_dtype_the_model_computes_in(capsys, golden_files, tmp_path, monkeypatch):
    generator = lama_fast.optimize(lama_fast.model.random.random_generator(TINY_CONFIG, seed=0), backend="reference")
    # A bfloat16 model takes and gives float32, the dtype of its first buffer; it computes in bfloat16.
    generator.compute_dtype = torch.bfloat16
    monkeypatch.setattr(lama_fast, "load", lambda *args, **kwargs: lama_fast.Inpainter(generator, "cpu"))
    out = tmp_path / "o.png"
    code, stdout, err = inpaint_golden(capsys, golden_files, out, "--dtype", "bfloat16")
    assert code == 0, err
    assert stdout == f"wrote {out} (cpu backend, bfloat16)\n"
