"""Folder runs of ``lama-fast inpaint``: pairing, never replacing inputs, resuming, bad files, formats."""

from __future__ import annotations

import io
import os
import re
import textwrap
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lama_fast
from lama_fast import batch
from lama_fast.cli import main

SUMMARY = re.compile(r"summary: (\d+) done, (\d+) skipped \(output exists\), (\d+) failed, (\d+) images? without a "
                     r"mask, [0-9.]+ s, [0-9.]+ images/s")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def summary_counts(stdout: str):
    found = SUMMARY.search(stdout)
    assert found, stdout
    return tuple(int(n) for n in found.groups())


def write_image(path: Path, size=(83, 61), seed=0) -> Path:
    """A smooth random RGB picture (small PNGs, like photos rather than noise)."""
    width, height = size
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
    picture = Image.fromarray(coarse).resize((width, height), Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def write_mask(path: Path, size=(83, 61), box=(10, 12, 40, 30)) -> Path:
    hole = np.zeros(size[::-1], np.uint8)
    left, top, right, bottom = box
    hole[top:bottom, left:right] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(hole).save(path)
    return path


def write_pair(root: Path, name: str, seed: int = 0) -> None:
    """The picture ``root/NAME.png`` and its mask ``root/NAME_mask.png``, as LaMa pairs them."""
    write_image(root / f"{name}.png", seed=seed)
    write_mask(root / f"{name}_mask.png")


def files_under(folder: Path):
    """Every file under ``folder``, hidden ones included, relative and sorted."""
    return sorted(str(Path(d, f).relative_to(folder)) for d, _, fs in os.walk(folder) for f in fs)


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def contents(folder: Path):
    """Every file under ``folder`` with its bytes."""
    return {name: (folder / name).read_bytes() for name in files_under(folder)}


@pytest.fixture()
def ckpt(golden_dir):
    return golden_dir / "tiny" / "checkpoint.ckpt"


@pytest.fixture()
def no_model(monkeypatch):
    """Make loading the model fail, to show that a run did not load it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(lama_fast, "load", refuse)


# ---------------------------------------------------------------- pairing


def test_masks_pair_with_images_by_lamas_rule(tmp_path):
    root = tmp_path / "in"
    a = write_image(root / "a.png")
    a_masks = [write_mask(root / "a_mask.png"), write_mask(root / "a_mask002.png")]
    b = write_image(root / "trip" / "day1" / "b.JPG")
    b_mask = write_mask(root / "trip" / "day1" / "b_mask.png")
    # A name with "_mask" inside the image's own name: cut at the last one.
    c = write_image(root / "c_mask_v2.jpg")
    c_mask = write_mask(root / "c_mask_v2_mask1.png")
    # A *mask*.png that another mask names as its image is that mask's image, not a broken mask.
    shot = write_image(root / "shot_mask.png")
    shot_mask = write_mask(root / "shot_mask_mask.png")
    unmasked = write_image(root / "trip" / "lonely.png")
    for suffix in (".png", ".jpg"):  # two candidates: an error for that mask
        write_image(root / f"d{suffix}")
    d_mask = write_mask(root / "d_mask.png")
    orphan = write_mask(root / "orphan_mask.png")
    nameless = write_mask(root / "mask.png")
    (root / "notes.txt").write_text("not an image")
    write_mask(root / ".hidden_mask.png")

    pairing = batch.pair_folder(root)
    assert [(p.image, p.mask, str(p.name)) for p in pairing.pairs] == [
        (a, a_masks[0], "a_mask"), (a, a_masks[1], "a_mask002"),
        (c, c_mask, "c_mask_v2_mask1"), (shot, shot_mask, "shot_mask_mask"), (b, b_mask, "trip/day1/b_mask"),
    ]
    assert [(f.path, f.message) for f in pairing.failures] == [
        (d_mask, f"mask {d_mask} matches several images: d.jpg, d.png"),
        (nameless, f"mask {nameless} has no '_mask' in its name to find its image by (name masks NAME_mask*.png, "
                   f"next to NAME.png or NAME.jpg)"),
        (orphan, f"no image {root / 'orphan'}.* for mask {orphan}"),
    ]
    assert pairing.unmasked == [unmasked]

    plan = batch.plan_folder(root, tmp_path / "out", output_format="same")
    assert [job.output.relative_to(tmp_path / "out").as_posix() for job in plan.jobs] == [
        "a_mask.png", "a_mask002.png", "c_mask_v2_mask1.jpg", "shot_mask_mask.png", "trip/day1/b_mask.JPG"]
    plan = batch.plan_folder(root, tmp_path / "out")
    assert [job.output.suffix for job in plan.jobs] == [".png"] * 5


def test_an_output_folder_inside_the_input_is_not_read(tmp_path):
    root = tmp_path / "in"
    write_image(root / "a.png")
    write_mask(root / "a_mask.png")
    write_mask(root / "results" / "a_mask.png")  # an output of an earlier run
    plan = batch.plan_folder(root, root / "results")
    assert [job.mask for job in plan.jobs] == [root / "a_mask.png"] and not plan.failures


def test_an_output_folder_inside_the_input_may_hold_the_runs_own_results(tmp_path):
    root, out = tmp_path / "in", tmp_path / "in" / "results"
    write_image(root / "shot.png")
    write_mask(root / "shot_mask.png")
    write_mask(root / "shot_mask_mask.png")  # its image is shot_mask.png
    before = contents(root)
    # The outputs results/shot_mask.png and results/shot_mask_mask.png pair with each other by
    # LaMa's rule: as this plan's own outputs they are not input pairs that the output folder holds.
    for overwrite, counts in ((False, (2, 0)), (False, (0, 2)), (True, (2, 0))):
        plan = batch.plan_folder(root, out)
        assert [job.output for job in plan.jobs] == [out / "shot_mask.png", out / "shot_mask_mask.png"]
        summary = batch.run_batch(plan, lambda image, mask: image, overwrite=overwrite, progress=False)
        assert (summary.done, summary.skipped, summary.failed) == (*counts, 0)
    assert {n: b for n, b in contents(root).items() if not n.startswith("results/")} == before
    assert files_under(out) == ["shot_mask.png", "shot_mask_mask.png"]


def test_an_output_folder_inside_the_mask_folder_holding_pairs_is_refused(tmp_path):
    images, masks = tmp_path / "in", tmp_path / "masks"
    write_image(images / "a.png")
    write_mask(masks / "a.png")
    write_image(images / "done" / "sub" / "b.png")
    write_mask(masks / "done" / "sub" / "b.png")
    with pytest.raises(ValueError) as raised:
        batch.plan_folder(images, masks / "done", mask_dir=masks)
    assert str(raised.value) == (f"{masks / 'done'}: the output folder holds 1 image/mask pair of the mask folder "
                                 f"(e.g. sub/b.png); choose an output folder outside {masks} or move them")


def test_mask_dir_pairs_by_relative_path_and_stem(tmp_path):
    images, masks = tmp_path / "in", tmp_path / "masks"
    a = write_image(images / "a.jpg")
    a_mask = write_mask(masks / "a.png")
    b = write_image(images / "sub" / "b.png")
    b_mask = write_mask(masks / "sub" / "b.bmp")
    unmasked = write_image(images / "sub" / "a.png")  # masks/a.png is not its mask: other folder
    e = write_image(images / "e.png")
    for suffix in (".png", ".jpg"):
        write_mask(masks / f"e{suffix}")
    f_png, f_jpg = write_image(images / "f.png"), write_image(images / "f.jpg")
    write_mask(masks / "f.png")
    unused = write_mask(masks / "nobody.png")

    pairing = batch.pair_folder(images, masks)
    assert [(p.image, p.mask, str(p.name)) for p in pairing.pairs] == [
        (a, a_mask, "a"), (f_jpg, masks / "f.png", "f"), (f_png, masks / "f.png", "f"), (b, b_mask, "sub/b")]
    assert [f.message for f in pairing.failures] == [f"image {e} matches several masks in {masks}: e.jpg, e.png"]
    assert pairing.unmasked == [unmasked] and pairing.unused_masks == [unused]

    plan = batch.plan_folder(images, tmp_path / "out", mask_dir=masks)
    assert [job.output for job in plan.jobs] == [tmp_path / "out" / "a.png", tmp_path / "out" / "sub" / "b.png"]
    clash = f"{f_jpg} and {f_png} would both be written to {tmp_path / 'out' / 'f.png'}"
    assert [f.message for f in plan.failures][1:] == [clash, clash]
    plan = batch.plan_folder(images, tmp_path / "out", mask_dir=masks, output_format="same")
    assert [job.output.name for job in plan.jobs] == ["a.jpg", "f.jpg", "f.png", "b.png"]


# ---------------------------------------------------------------- runs through the CLI


def test_folder_run_matches_the_golden_image_and_single_runs(capsys, ckpt, golden_case, tmp_path):
    case = golden_case("inpaint_case")
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    Image.fromarray(case["image"].numpy()).save(root / "photo.png")
    Image.fromarray(case["mask"].numpy()).save(root / "photo_mask.png")
    write_image(root / "sub" / "street.jpg", size=(96, 72), seed=3)
    write_mask(root / "sub" / "street_mask_a.png", size=(96, 72))
    write_mask(root / "sub" / "street_mask_b.png", size=(96, 72), box=(50, 40, 90, 70))

    code, stdout, err = run(capsys, "inpaint", root, "-o", out, "--checkpoint", ckpt, "--dtype", "float64")
    assert code == 0, err
    assert summary_counts(stdout) == (3, 0, 0, 0)
    assert files_under(out) == ["photo_mask.png", "sub/street_mask_a.png", "sub/street_mask_b.png"]
    np.testing.assert_array_equal(pixels(out / "photo_mask.png"), case["inpainted_uint8"].numpy())
    for name in ("street_mask_a", "street_mask_b"):
        single = tmp_path / f"{name}.png"
        code, _, err = run(capsys, "inpaint", root / "sub" / "street.jpg", root / "sub" / f"{name}.png", "-o", single,
                           "--checkpoint", ckpt, "--dtype", "float64")
        assert code == 0, err
        np.testing.assert_array_equal(pixels(out / "sub" / f"{name}.png"), pixels(single))


def test_outputs_never_replace_inputs(capsys, ckpt, tmp_path, no_model):
    root = tmp_path / "in"
    write_image(root / "a.png")
    mask = write_mask(root / "a_mask.png")
    before = {p: p.read_bytes() for p in root.iterdir()}
    code, stdout, err = run(capsys, "inpaint", root, "-o", root, "--checkpoint", ckpt)
    assert code == 2 and stdout == ""
    assert err == (f"lama-fast inpaint: refusing to overwrite input files: the output folder {root} is the input "
                   f"folder; choose an output folder apart from the inputs\n")
    masks = tmp_path / "masks"
    write_mask(masks / "a.png")
    code, _, err = run(capsys, "inpaint", root, "--mask-dir", masks, "-o", masks, "--checkpoint", ckpt)
    assert code == 2 and "the output folder" in err and "is the mask folder" in err
    # Masks one level down whose outputs land on the inputs one level up.
    nested = write_mask(root / "in" / "a_mask.png")
    write_image(root / "in" / "a.png")
    code, _, err = run(capsys, "inpaint", root, "-o", tmp_path, "--checkpoint", ckpt)
    assert code == 2
    assert err == (f"lama-fast inpaint: refusing to overwrite input files: the output {tmp_path / 'in' / 'a_mask.png'} "
                   f"would replace the input {mask}; choose an output folder apart from the inputs\n")
    nested.unlink()
    assert {p: p.read_bytes() for p in root.iterdir() if p.is_file()} == before


def test_an_output_folder_holding_pairs_of_the_input_is_refused(capsys, ckpt, tmp_path, no_model):
    root, out = tmp_path / "in", tmp_path / "in" / "results"
    write_image(root / "a.png")
    write_mask(root / "a_mask.png")
    # A copy of the pair in the output folder: its mask is where a_mask.png's output would go.
    write_image(out / "a.png", seed=1)
    write_mask(out / "a_mask.png", box=(0, 0, 5, 5))
    write_image(out / "sub" / "b.jpg")
    write_mask(out / "sub" / "b_mask.png")
    write_mask(out / "sub" / "b_mask2.png")
    write_mask(out / "c_mask.png")  # an earlier result without its image: not a pair
    before = contents(tmp_path)
    for overwrite in ((), ("--overwrite",)):
        code, stdout, err = run(capsys, "inpaint", root, "-o", out, "--checkpoint", ckpt, *overwrite)
        assert code == 2 and stdout == ""
        assert err == (f"lama-fast inpaint: {out}: the output folder holds 3 image/mask pairs of the input folder "
                       f"(e.g. a.png); choose an output folder outside {root} or move them\n")
        assert contents(tmp_path) == before


def test_existing_outputs_are_skipped_and_overwrite_redoes_them(capsys, ckpt, tmp_path, monkeypatch):
    root, out = tmp_path / "in", tmp_path / "out"
    for name in "abc":
        write_pair(root, name, seed=ord(name))
    code, stdout, err = run(capsys, "inpaint", root, "-o", out, "--checkpoint", ckpt)
    assert code == 0 and summary_counts(stdout) == (3, 0, 0, 0), err
    first = {name: (out / f"{name}_mask.png").read_bytes() for name in "abc"}

    # Remove one output, plant what a killed run leaves behind, and a hidden file that is not ours.
    (out / "b_mask.png").unlink()
    (out / ".b_mask.png.k3j_9x2a.tmp").write_bytes(b"half a png")
    (out / ".notes.tmp").write_text("the user's")
    (out / "c_mask.png").write_bytes(b"edited by hand")
    code, stdout, err = run(capsys, "inpaint", root, "-o", out, "--checkpoint", ckpt)
    assert code == 0 and summary_counts(stdout) == (1, 2, 0, 0), err
    assert "removed 1 temporary files left by an interrupted run" in err
    assert files_under(out) == [".notes.tmp", "a_mask.png", "b_mask.png", "c_mask.png"]
    assert (out / "b_mask.png").read_bytes() == first["b"] and (out / "c_mask.png").read_bytes() == b"edited by hand"

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(lama_fast, "load", refuse)
    code, stdout, err = run(capsys, "inpaint", root, "-o", out, "--checkpoint", ckpt)
    assert code == 0 and summary_counts(stdout) == (0, 3, 0, 0), err
    assert f"nothing to do: all 3 outputs exist in {out} (--overwrite redoes them); the model was not loaded" in stdout
    monkeypatch.undo()

    code, stdout, err = run(capsys, "inpaint", root, "-o", out, "--checkpoint", ckpt, "--overwrite")
    assert code == 0 and summary_counts(stdout) == (3, 0, 0, 0), err
    assert {name: (out / f"{name}_mask.png").read_bytes() for name in "abc"} == first


def test_bad_files_are_reported_and_the_rest_go_on(capsys, ckpt, tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    for name in ("good1", "good2"):
        write_pair(root, name)
    corrupt = root / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    write_mask(root / "corrupt_mask.png")
    small = write_image(root / "small.png")
    small_mask = write_mask(root / "small_mask.png", size=(40, 30), box=(1, 1, 5, 5))
    deep = root / "deep.png"
    Image.fromarray(np.full((61, 83), 40000, np.uint16)).save(deep)
    write_mask(root / "deep_mask.png")
    write_image(root / "spare.png")

    code, stdout, err = run(capsys, "inpaint", root, "-o", out, "--checkpoint", ckpt)
    assert code == 1
    assert summary_counts(stdout) == (2, 0, 3, 1)
    failures = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("failed: ")]
    assert len(failures) == 3, err
    assert failures[0].startswith(f"failed: cannot read image {corrupt}: ")
    assert failures[1].startswith(f"failed: image {deep} is a 16-bit image")
    assert failures[2] == f"failed: mask {small_mask} is 40x30 but image {small} is 83x61"
    assert files_under(out) == ["good1_mask.png", "good2_mask.png"]


def test_output_formats_and_encoder_options(capsys, ckpt, tmp_path):
    root = tmp_path / "in"
    write_image(root / "a.png", size=(160, 120))
    write_mask(root / "a_mask.png", size=(160, 120))
    write_image(root / "b.jpg", size=(160, 120))
    write_mask(root / "b_mask.png", size=(160, 120))

    def inpaint(out, *options):
        code, stdout, err = run(capsys, "inpaint", root, "-o", tmp_path / out, "--checkpoint", ckpt, *options)
        assert code == 0 and summary_counts(stdout)[0] == 2, err
        return tmp_path / out

    png = inpaint("png")
    assert [Image.open(p).format for p in (png / "a_mask.png", png / "b_mask.png")] == ["PNG", "PNG"]
    same = inpaint("same", "--output-format", "same")
    assert files_under(same) == ["a_mask.png", "b_mask.jpg"] and Image.open(same / "b_mask.jpg").format == "JPEG"
    fine = inpaint("q95", "--output-format", "jpg")
    coarse = inpaint("q30", "--output-format", "jpg", "--jpeg-quality", "30")
    for folder, quality in ((fine, 95), (coarse, 30)):
        # The JPEG is the lossless result encoded at that quality, byte for byte.
        encoded = io.BytesIO()
        Image.open(png / "a_mask.png").save(encoded, format="JPEG", quality=quality)
        assert (folder / "a_mask.jpg").read_bytes() == encoded.getvalue()
    assert (coarse / "a_mask.jpg").stat().st_size < (fine / "a_mask.jpg").stat().st_size
    stored = inpaint("level0", "--png-compress-level", "0")
    assert (stored / "a_mask.png").stat().st_size > (png / "a_mask.png").stat().st_size
    np.testing.assert_array_equal(pixels(stored / "a_mask.png"), pixels(png / "a_mask.png"))

    for flag, value, message in (("--jpeg-quality", "0", "JPEG quality must be in 1..100, got 0"),
                                 ("--png-compress-level", "10", "PNG compression level must be in 0..9, got 10"),
                                 ("--max-memory", "lots", "max_memory must look like 4G, 512M or 2000000000")):
        with pytest.raises(SystemExit):
            main(["inpaint", str(root), "-o", str(tmp_path / "x"), flag, value])
        assert message in capsys.readouterr().err
    code, _, err = run(capsys, "inpaint", root / "a.png", root / "a_mask.png", "-o", tmp_path / "x.png",
                       "--output-format", "jpg", "--checkpoint", ckpt)
    assert code == 2 and "--output-format goes with an input folder" in err


def test_inpainter_options_are_passed_only_when_given(capsys, ckpt, tmp_path, monkeypatch):
    calls = []

    class Recorder:
        backend, dtype = "fake", "float32"

        def __call__(self, image, mask, **options):
            calls.append(options)
            return image

    monkeypatch.setattr(lama_fast, "load", lambda *args, **kwargs: Recorder())
    root = tmp_path / "in"
    write_image(root / "a.png")
    write_mask(root / "a_mask.png")
    code, _, err = run(capsys, "inpaint", root, "-o", tmp_path / "plain", "--checkpoint", ckpt)
    assert code == 0, err
    code, _, err = run(capsys, "inpaint", root, "-o", tmp_path / "tuned", "--checkpoint", ckpt,
                       "--hd-strategy", "resize", "--resize-limit", "512", "--crop-margin", "64",
                       "--crop-trigger-size", "1000", "--mask-threshold", "127", "--max-memory", "1.5G")
    assert code == 0, err
    code, _, err = run(capsys, "inpaint", root / "a.png", root / "a_mask.png", "-o", tmp_path / "one.png",
                       "--checkpoint", ckpt, "--hd-strategy", "original")
    assert code == 0, err
    assert calls == [
        {},
        {"hd_strategy": "resize", "resize_limit": 512, "crop_margin": 64, "crop_trigger_size": 1000,
         "mask_threshold": 127.0, "max_memory": 3 << 29},
        {"hd_strategy": "original"},
    ]


def test_no_masks_found_is_an_error(capsys, ckpt, tmp_path, no_model):
    write_image(tmp_path / "in" / "a.png")
    code, _, err = run(capsys, "inpaint", tmp_path / "in", "-o", tmp_path / "out", "--checkpoint", ckpt)
    assert code == 2 and f"no mask found in {tmp_path / 'in'}: masks are files named NAME_mask*.png" in err


def test_run_batch_from_python_stops_on_ctrl_c_and_resumes(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    for name in "abc":
        write_pair(root, name, seed=ord(name))
    calls = []

    def interrupted_on_the_second(image, mask):
        calls.append(image.size)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return image

    plan = batch.plan_folder(root, out)
    summary = batch.run_batch(plan, interrupted_on_the_second, progress=False)
    assert summary.interrupted and (summary.done, summary.failed) == (1, 0)
    assert files_under(out) == ["a_mask.png"]
    loads = []
    summary = batch.run_batch(plan, load=lambda: loads.append(1) or (lambda image, mask: image), progress=False)
    assert not summary.interrupted and (summary.done, summary.skipped) == (2, 1) and loads == [1]
    assert files_under(out) == ["a_mask.png", "b_mask.png", "c_mask.png"]
    np.testing.assert_array_equal(pixels(out / "b_mask.png"), pixels(root / "b.png"))
    summary = batch.run_batch(plan, load=lambda: loads.append(2), progress=False)
    assert summary.skipped == 3 and not summary.model_loaded and loads == [1]


def write_pairs(root, count, stem, sub, size, box) -> list:
    """``count`` image/mask pairs, the second half in the subfolder ``sub``; the masks' paths, sorted."""
    masks = []
    for i in range(count):
        folder = root / ("" if i < count // 2 else sub)
        write_image(folder / f"{stem}{i:02d}.png", size=size, seed=i)
        write_mask(folder / f"{stem}{i:02d}_mask.png", size=size, box=box(i))
        masks.append(str((folder / f"{stem}{i:02d}_mask.png").relative_to(root)))
    return sorted(masks)


# ---------------------------------------------------------------- the must-hold: a killed run resumes


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_folder_run_resumes_without_loss(capsys, ckpt, tmp_path):
    """SIGKILL a folder run once two outputs exist; a second run completes it: every output once,
    each equal to an uninterrupted run's, and no temporary file anywhere in the output folder.

    The kill lands mid-run because the 14 images left take the tiny model about a second
    (60-80 ms each at 512x384 on 2 cores), against a 2 ms poll; the test checks that it did."""
    root, out, reference = tmp_path / "in", tmp_path / "out", tmp_path / "reference"
    expected = write_pairs(root, 16, "frame", "later", (512, 384), lambda i: (20 + 9 * i, 30, 200 + 9 * i, 300))
    command = [sys.executable, "-m", "lama_fast.cli", "inpaint", str(root), "-o", str(out), "--checkpoint", str(ckpt)]

    def outputs():
        return [p for p in out.rglob("*.png") if not p.name.startswith(".")] if out.exists() else []

    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    deadline = time.monotonic() + 300
    try:
        while len(outputs()) < 2 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    killed_with = len(outputs())
    assert first.returncode == -signal.SIGKILL, "the first run ended before it was killed"
    assert 2 <= killed_with < len(expected), f"the kill did not land mid-run ({killed_with} outputs)"

    second = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert second.returncode == 0, second.stderr
    assert summary_counts(second.stdout) == (len(expected) - killed_with, killed_with, 0, 0)
    assert files_under(out) == expected, "every output exactly once, and no temporary or partial file"

    code, stdout, err = run(capsys, "inpaint", root, "-o", reference, "--checkpoint", ckpt)
    assert code == 0 and summary_counts(stdout) == (len(expected), 0, 0, 0), err
    for name in expected:
        np.testing.assert_array_equal(pixels(out / name), pixels(reference / name), err_msg=name)


# ---------------------------------------------------------------- runs sharing an output folder


def start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat: when the process started, in clock ticks after boot."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[19])


needs_proc_and_flock = pytest.mark.skipif(not Path("/proc/self/stat").is_file() or os.name != "posix",
                                          reason="reads process start times from /proc and locks with flock")


@needs_proc_and_flock
def test_only_temporaries_whose_writer_is_gone_are_removed(tmp_path):
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    jobs = [batch.Job(tmp_path / "a.png", tmp_path / "a_mask.png", out / "a_mask.png")]
    me, started = os.getpid(), start_time(os.getpid())
    never = int(Path("/proc/sys/kernel/pid_max").read_text())  # pids stay below pid_max
    names = {
        "live": f".a_mask.png.{me}-{started}-1a2b3c4d.tmp",  # this process writes it
        "reused": f".a_mask.png.{me}-{started + 1}-1a2b3c4d.tmp",  # an earlier process with this pid
        "dead": f".a_mask.png.{never}-{started}-1a2b3c4d.tmp",
        "locked": f".b_mask.jpg.{never}-{started}-5e6f7a8b.tmp",  # a writer in another pid namespace
        "earlier version": ".c_mask.png.k3j_9x2a.tmp",
        "not an image": f".notes.txt.{never}-{started}-1a2b3c4d.tmp",
        "not ours": ".notes.tmp",
    }
    for name in names.values():
        (out / name).write_bytes(b"half a png")
    lock = os.open(out / names["locked"], os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert batch.remove_leftovers(jobs) == sorted(out / names[k] for k in ("dead", "earlier version", "reused"))
    finally:
        os.close(lock)
    assert files_under(out) == sorted(names[k] for k in ("live", "locked", "not an image", "not ours"))
    assert batch.remove_leftovers(jobs) == [out / names["locked"]]  # its lock is gone with its writer

    # atomic_write's own temporary file names this process and is kept while it is written.
    (out / names["live"]).unlink()
    seen = []

    def write(tmp):
        Path(tmp).write_bytes(b"done")
        seen.append((Path(tmp).name, batch.remove_leftovers(jobs), batch.being_written(out / "a_mask.png")))

    batch.atomic_write(out / "a_mask.png", write)
    [(name, removed, busy)] = seen
    assert re.fullmatch(rf"\.a_mask\.png\.{me}-{started}-[0-9a-f]{{8}}\.tmp", name) and removed == [] and busy
    assert files_under(out) == sorted(["a_mask.png", names["not an image"], names["not ours"]])
    assert not batch.being_written(out / "a_mask.png")


# Writes its argv[2] with lama_fast._io.atomic_write (loaded alone: no torch to import), names its
# temporary file in argv[3], and waits inside the write until argv[4] exists.
SLOW_WRITER = textwrap.dedent("""
    import importlib.util, sys, time
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("lama_io", sys.argv[1])
    io = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(io)

    def write(tmp):
        Path(tmp).write_bytes(b"written by " + str(sys.argv[5]).encode())
        Path(sys.argv[3] + ".part").write_text(tmp)
        Path(sys.argv[3] + ".part").rename(sys.argv[3])
        while not Path(sys.argv[4]).exists():
            time.sleep(0.002)

    io.atomic_write(Path(sys.argv[2]), write)
""")


@needs_proc_and_flock
def test_a_running_writers_temporary_is_kept_and_a_killed_ones_removed(tmp_path):
    out = tmp_path / "out"
    output = out / "a_mask.png"
    jobs = [batch.Job(tmp_path / "a.png", tmp_path / "a_mask.png", output)]

    def start_writer(label):
        told, go = tmp_path / f"{label}.told", tmp_path / f"{label}.go"
        child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, batch.__file__.replace("batch.py", "_io.py"),
                                  str(output), str(told), str(go), label])
        deadline = time.monotonic() + 60
        while not told.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        assert told.exists(), f"the writer did not start (exit {child.poll()})"
        return child, Path(told.read_text()), go

    # What a second folder run does at its start while the first writes: it must leave the file be.
    child, tmp, go = start_writer("first")
    try:
        assert batch.remove_leftovers(jobs) == [] and tmp.exists() and batch.being_written(output)
        assert re.fullmatch(rf"\.a_mask\.png\.{child.pid}-{start_time(child.pid)}-[0-9a-f]{{8}}\.tmp", tmp.name)
    finally:
        go.touch()
        assert child.wait(timeout=60) == 0
    assert files_under(out) == ["a_mask.png"] and output.read_bytes() == b"written by first"

    child, tmp, go = start_writer("killed")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert files_under(out) == [tmp.name, "a_mask.png"] and not batch.being_written(output)
    assert batch.remove_leftovers(jobs) == [tmp]
    assert files_under(out) == ["a_mask.png"] and output.read_bytes() == b"written by first"


# Imports the CLI, waits until argv[1] exists, then runs it with the rest of argv on one thread
# (two runs of two threads each on a small machine spend their time waiting for each other).
WAIT_THEN_RUN = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from lama_fast.cli import main
    torch.set_num_threads(1)
    while not Path(sys.argv[1]).exists():
        time.sleep(0.002)
    sys.exit(main(sys.argv[2:]))
""")


def test_two_runs_into_one_output_folder_both_succeed(capsys, ckpt, tmp_path):
    """Two folder runs on the same folders, the second started once the first writes: both exit 0,
    neither removes the other's temporary files, and the outputs are a single run's, once each."""
    root, out, reference = tmp_path / "in", tmp_path / "out", tmp_path / "reference"
    expected = write_pairs(root, 12, "p", "sub", (192, 144), lambda i: (10 + 5 * i, 20, 90 + 5 * i, 100))
    go = [tmp_path / "go1", tmp_path / "go2"]
    runs = [subprocess.Popen([sys.executable, "-c", WAIT_THEN_RUN, str(g), "inpaint", str(root), "-o", str(out),
                              "--checkpoint", str(ckpt)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=tmp_path) for g in go]
    try:
        go[0].touch()
        deadline = time.monotonic() + 120
        while not (out.exists() and any(out.rglob("*.tmp"))) and runs[0].poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.002)
        go[1].touch()
        ended = [r.communicate(timeout=300) for r in runs]
    finally:
        for r in runs:
            if r.poll() is None:
                r.kill()
    for r, (stdout, stderr) in zip(runs, ended):
        assert r.returncode == 0, stderr
        done, skipped, failed, _ = summary_counts(stdout)
        assert done + skipped == len(expected) and failed == 0, stdout
        assert "temporary files left by an interrupted run" not in stderr
    assert sum(summary_counts(stdout)[0] for stdout, _ in ended) >= len(expected)
    assert files_under(out) == expected, "every output exactly once, and no temporary file"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the two runs: the same kernels, the same sums
    try:
        code, stdout, err = run(capsys, "inpaint", root, "-o", reference, "--checkpoint", ckpt)
    finally:
        torch.set_num_threads(threads)
    assert code == 0 and summary_counts(stdout) == (len(expected), 0, 0, 0), err
    for name in expected:
        np.testing.assert_array_equal(pixels(out / name), pixels(reference / name), err_msg=name)


# ---------------------------------------------------------------- lanes (images in flight)


def test_lanes_give_the_same_files_as_one_image_at_a_time(capsys, ckpt, tmp_path):
    root = tmp_path / "in"
    for i in range(5):
        write_pair(root, f"photo{i}", seed=i)
    corrupt = root / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    write_mask(root / "corrupt_mask.png")
    threads = torch.get_num_threads()
    outputs = {}
    for lanes in (1, 3):
        out = tmp_path / f"out{lanes}"
        code, stdout, err = run(capsys, "inpaint", root, "-o", out, "--checkpoint", ckpt, "--lanes", lanes)
        assert code == 1, err
        assert summary_counts(stdout) == (5, 0, 1, 0)
        failures = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("failed: ")]
        assert len(failures) == 1 and failures[0].startswith(f"failed: cannot read image {corrupt}: "), err
        outputs[lanes] = contents(out)
        assert torch.get_num_threads() == threads  # given back after the run
    assert sorted(outputs[1]) == [f"photo{i}_mask.png" for i in range(5)]
    assert outputs[3] == outputs[1]  # byte for byte


def test_lanes_skip_existing_outputs_and_stop_cleanly_on_ctrl_c(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    for i in range(6):
        write_pair(root, f"p{i}", seed=i)
    plan = batch.plan_folder(root, out)
    calls = []

    def inpainter(image, mask, **options):
        calls.append(torch.get_num_threads())
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a Ctrl-C would, in the middle of the run
        return np.asarray(image)

    summary = batch.run_batch(plan, inpainter, progress=False, lanes=2)
    # The interrupt reaches the main thread through the lane that raised it: the images in flight finish.
    assert summary.interrupted or summary.done + len(summary.failures) == 6
    written = files_under(out)
    assert all(name.endswith("_mask.png") for name in written)  # no temporary file is left
    assert all(count == 1 for count in calls)  # each lane runs one torch thread
    second = batch.run_batch(plan, lambda image, mask, **o: np.asarray(image), progress=False, lanes=2)
    assert second.skipped == len(written) and second.done == 6 - len(written)
    assert len(files_under(out)) == 6


def test_lanes_are_checked(capsys, ckpt, tmp_path, no_model):
    root = tmp_path / "in"
    write_pair(root, "a")
    with pytest.raises(ValueError, match=re.escape("lanes must be an integer >= 1, got 0")):
        batch.run_batch(batch.plan_folder(root, tmp_path / "out"), lambda *a, **k: None, lanes=0)
    code, _, err = run(capsys, "inpaint", root / "a.png", root / "a_mask.png", "-o", tmp_path / "x.png",
                       "--checkpoint", ckpt, "--lanes", "2")
    assert code == 2 and "--lanes goes with an input folder" in err
    code, _, err = run(capsys, "inpaint", root, "-o", tmp_path / "o", "--checkpoint", ckpt, "--lanes", "2", "--refine")
    assert code == 2 and "--lanes goes with inpainting, not --refine" in err
