"""``lama-fast inpaint --refine``: one image and a folder give ``Inpainter.refine``'s pixels; the options' errors."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pytest
from PIL import Image

import lama_fast
from lama_fast import batch
from lama_fast.cli import main
from lama_fast.cli.inpaint import ScaleProgress

# Two scales for the golden 83x61 picture (short side 61 > 32 * sqrt(2)), two forwards at the second.
FAST = {"n_iters": 2, "min_side": 32}
FAST_ARGS = ("--refine", "--refine-n-iters", "2", "--refine-min-side", "32")
PROGRESS_LINE = re.compile(r"^refining scale (\d+)/(\d+): iteration (\d+)/(\d+)(, loss \d+\.\d{4})?$")


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def ckpt(golden_dir):
    return golden_dir / "tiny" / "checkpoint.ckpt"


@pytest.fixture(scope="module")
def direct(ckpt):
    """The model as the command loads it (backend auto, float32)."""
    return lama_fast.load(str(ckpt))


@pytest.fixture()
def pair(golden_case, tmp_path):
    case = golden_case("inpaint_case")
    image, mask = tmp_path / "photo.png", tmp_path / "photo_mask.png"
    Image.fromarray(case["image"].numpy()).save(image)
    Image.fromarray(case["mask"].numpy()).save(mask)
    return image, mask


def photo(path, size, seed):
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width, y / height, (x + y) / (width + height)], -1) * 200
    Image.fromarray(np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)).save(path)


def hole(path, size, box):
    mask = np.zeros(size[::-1], np.uint8)
    left, top, right, bottom = box
    mask[top:bottom, left:right] = 255
    Image.fromarray(mask).save(path)


def refined(direct, image_path, mask_path, **options):
    """``Inpainter.refine`` on the files as the command reads them, its warnings and its progress text."""
    image, mask = batch.read_pair(image_path, mask_path)
    said = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = direct.refine(image, mask, progress=ScaleProgress(said), **options)
    return np.asarray(result), [str(w.message) for w in caught], said.getvalue()


def test_one_image_is_inpainter_refine_with_a_line_per_scale(capsys, ckpt, direct, pair, tmp_path):
    image, mask = pair
    out = tmp_path / "refined.png"
    code, stdout, err = run(capsys, "inpaint", image, mask, "-o", out, "--checkpoint", ckpt, *FAST_ARGS)
    assert code == 0, err
    assert stdout == f"wrote {out} ({direct.backend} backend, float32, refined)\n"
    want, notes, progress = refined(direct, image, mask, **FAST)
    assert notes == []
    np.testing.assert_array_equal(np.asarray(Image.open(out)), want)
    # Refinement changed the hole: the result is not the plain inpainting.
    plain = np.asarray(direct(*batch.read_pair(image, mask)))
    assert not np.array_equal(want, plain)
    lines = err.splitlines()
    assert err == progress
    assert [PROGRESS_LINE.match(line).groups()[:4] for line in lines] == [("1", "2", "1", "1"), ("2", "2", "2", "2")]
    assert PROGRESS_LINE.match(lines[0]).group(5) is None  # the first scale is not optimised: no loss
    assert PROGRESS_LINE.match(lines[1]).group(5) is not None


def test_refine_takes_the_mask_threshold(capsys, ckpt, direct, tmp_path):
    image, mask = tmp_path / "a.png", tmp_path / "a_mask.png"
    photo(image, (80, 64), seed=1)
    grey = np.zeros((64, 80), np.uint8)
    grey[10:40, 10:40] = 200
    grey[40:60, 50:75] = 90  # a hole only below the threshold 100
    Image.fromarray(grey).save(mask)
    out = tmp_path / "out.png"
    code, _, err = run(capsys, "inpaint", image, mask, "-o", out, "--checkpoint", ckpt, *FAST_ARGS,
                       "--mask-threshold", "100", "--refine-lr", "0.01", "--refine-max-scales", "2",
                       "--refine-modulo", "16")
    assert code == 0, err
    want, _, _ = refined(direct, image, mask, mask_threshold=100, lr=0.01, max_scales=2, modulo=16, **FAST)
    got = np.asarray(Image.open(out))
    np.testing.assert_array_equal(got, want)
    source = np.asarray(Image.open(image))
    np.testing.assert_array_equal(got[40:60, 50:75], source[40:60, 50:75])
    assert not np.array_equal(got[10:40, 10:40], source[10:40, 10:40])


def test_the_pixel_budget_resizes_with_a_warning_and_full_size_scales_back(capsys, ckpt, direct, pair, tmp_path):
    image, mask = pair  # 83x61 = 5063 pixels
    small, full = tmp_path / "small.png", tmp_path / "full.png"
    code, _, err = run(capsys, "inpaint", image, mask, "-o", small, "--checkpoint", ckpt, *FAST_ARGS,
                       "--refine-px-budget", "3000")
    assert code == 0, err
    want, notes, progress = refined(direct, image, mask, px_budget=3000, **FAST)
    assert len(notes) == 1
    assert err == progress + f"lama-fast inpaint: {notes[0]}\n"
    got = np.asarray(Image.open(small))
    assert got.shape[:2] == want.shape[:2] == (46, 63)  # sqrt(3000 / 5063) of each side
    np.testing.assert_array_equal(got, want)

    code, _, err = run(capsys, "inpaint", image, mask, "-o", full, "--checkpoint", ckpt, *FAST_ARGS,
                       "--refine-px-budget", "3000", "--refine-full-size")
    assert code == 0, err
    want, notes, progress = refined(direct, image, mask, px_budget=3000, full_size=True, **FAST)
    assert notes == [] and err == progress
    got = np.asarray(Image.open(full))
    assert got.shape[:2] == (61, 83)
    np.testing.assert_array_equal(got, want)


def test_a_folder_is_refined_image_by_image(capsys, ckpt, direct, pair, tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    image, mask = pair
    (root / "photo.png").write_bytes(image.read_bytes())
    (root / "photo_mask.png").write_bytes(mask.read_bytes())
    photo(root / "sub" / "street.png", (96, 72), seed=3)
    hole(root / "sub" / "street_mask.png", (96, 72), (20, 20, 60, 50))
    code, stdout, err = run(capsys, "inpaint", root, "-o", out, "--checkpoint", ckpt, *FAST_ARGS)
    assert code == 0, err
    assert f"refined {root} into {out} ({direct.backend} backend, float32)" in stdout
    assert "summary: 2 done, 0 skipped (output exists), 0 failed" in stdout
    assert "refining scale" not in err  # a folder shows its progress bar, not each scale
    for name, source in (("photo_mask.png", root / "photo.png"), ("sub/street_mask.png", root / "sub" / "street.png")):
        want, _, _ = refined(direct, source, root / name, **FAST)
        np.testing.assert_array_equal(np.asarray(Image.open(out / name)), want)


def test_a_folder_item_resized_by_the_budget_says_so_with_its_path(capsys, ckpt, direct, tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    photo(root / "big.png", (96, 72), seed=4)
    hole(root / "big_mask.png", (96, 72), (30, 20, 70, 60))
    code, _, err = run(capsys, "inpaint", root, "-o", out, "--checkpoint", ckpt, *FAST_ARGS,
                       "--refine-px-budget", "5000")
    assert code == 0, err
    want, notes, _ = refined(direct, root / "big.png", root / "big_mask.png", px_budget=5000, **FAST)
    assert len(notes) == 1 and f"{root / 'big.png'}: {notes[0]}" in err
    got = np.asarray(Image.open(out / "big_mask.png"))
    assert got.shape[:2] == (61, 81)
    np.testing.assert_array_equal(got, want)


REFINE_ONLY = "goes with --refine"
HD = "does not go with --refine: refinement runs on the whole image resized to --refine-px-budget pixels"


@pytest.mark.parametrize("argv, message", [
    (["--refine-n-iters", "3"], f"--refine-n-iters {REFINE_ONLY}"),
    (["--refine-lr", "0.1"], f"--refine-lr {REFINE_ONLY}"),
    (["--refine-min-side", "64"], f"--refine-min-side {REFINE_ONLY}"),
    (["--refine-max-scales", "2"], f"--refine-max-scales {REFINE_ONLY}"),
    (["--refine-px-budget", "1000"], f"--refine-px-budget {REFINE_ONLY}"),
    (["--refine-modulo", "16"], f"--refine-modulo {REFINE_ONLY}"),
    (["--refine-full-size"], f"--refine-full-size {REFINE_ONLY}"),
    (["--refine", "--hd-strategy", "crop"], f"--hd-strategy {HD}"),
    (["--refine", "--crop-margin", "8"], f"--crop-margin {HD}"),
    (["--refine", "--crop-trigger-size", "8"], f"--crop-trigger-size {HD}"),
    (["--refine", "--resize-limit", "64"], f"--resize-limit {HD}"),
    (["--refine", "--max-memory", "4G"], "--max-memory does not go with --refine: refinement runs on the whole "
                                         "image resized to --refine-px-budget pixels, without the memory guard"),
    (["--refine", "--ray"], "--refine does not run on --ray: refine a folder on this machine (lama-fast inpaint "
                            "INPUT_DIR -o OUTPUT_DIR --refine)"),
    (["--refine", "--explain", "plan.png"], "--explain draws the plan of inpainting without --refine; refinement "
                                            "runs on the whole image resized to --refine-px-budget pixels"),
])
def test_option_combinations_are_refused_before_any_work(capsys, ckpt, pair, tmp_path, argv, message):
    image, mask = pair
    out = tmp_path / "never.png"
    code, stdout, err = run(capsys, "inpaint", image, mask, "-o", out, "--checkpoint", ckpt, *argv)
    assert (code, stdout, err) == (2, "", f"lama-fast inpaint: {message}\n")
    assert not out.exists()


@pytest.mark.parametrize("option, value, message", [
    ("--refine-n-iters", "0", "refine iterations must be at least 1, got 0"),
    ("--refine-n-iters", "two", "refine iterations must be an integer, got 'two'"),
    ("--refine-lr", "0", "refine learning rate must be a number > 0, got '0'"),
    ("--refine-lr", "nan", "refine learning rate must be a number > 0, got 'nan'"),
    ("--refine-lr", "inf", "refine learning rate must be a number > 0, got 'inf'"),
    ("--refine-min-side", "0", "refine min side must be at least 1, got 0"),
    ("--refine-max-scales", "-1", "refine max scales must be at least 1, got -1"),
    ("--refine-px-budget", "1.5e6", "refine pixel budget must be an integer, got '1.5e6'"),
    ("--refine-modulo", "0", "refine modulo must be at least 1, got 0"),
])
def test_bad_values_are_refused_when_parsed(capsys, option, value, message):
    with pytest.raises(SystemExit) as stopped:
        main(["inpaint", "a.png", "a_mask.png", "-o", "b.png", "--refine", option, value])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (f"lama-fast inpaint: argument {option}: {message} "
                                       f"(see lama-fast inpaint --help)\n")


def test_an_image_too_small_for_the_modulo_is_a_one_line_error(capsys, ckpt, tmp_path):
    image, mask = tmp_path / "s.png", tmp_path / "s_mask.png"
    photo(image, (12, 10), seed=5)
    hole(mask, (12, 10), (2, 2, 8, 8))
    code, stdout, err = run(capsys, "inpaint", image, mask, "-o", tmp_path / "o.png", "--checkpoint", ckpt,
                            "--refine", "--refine-modulo", "32")
    assert (code, stdout) == (2, "")
    assert len(err.splitlines()) == 1
    assert err.startswith(f"lama-fast inpaint: cannot refine {image}: ")
    assert "modulo=32" in err


def test_a_modulo_the_model_cannot_take_names_the_option(capsys, ckpt, direct, pair, tmp_path):
    image, mask = pair
    with pytest.raises(ValueError) as raised:
        direct.refine(*batch.read_pair(image, mask), modulo=12)
    message = str(raised.value)
    assert message.startswith("modulo must be a multiple of 8")
    code, _, err = run(capsys, "inpaint", image, mask, "-o", tmp_path / "o.png", "--checkpoint", ckpt,
                       "--refine", "--refine-modulo", "12")
    assert (code, err) == (2, f"lama-fast inpaint: cannot refine {image}: --refine-{message}\n")


def test_the_help_lists_the_refine_options(capsys):
    with pytest.raises(SystemExit):
        main(["inpaint", "--help"])
    text = capsys.readouterr().out
    for option in ("--refine ", "--refine-n-iters", "--refine-lr", "--refine-min-side", "--refine-max-scales",
                   "--refine-px-budget", "--refine-modulo", "--refine-full-size"):
        assert option in text


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_rewrites_the_line_of_the_scale_under_way():
    screen = Terminal()
    show = ScaleProgress(screen)
    show(0, 2, 0, 1, None)
    for iteration, loss in enumerate((0.25, 0.125, 0.0625)):
        show(1, 2, iteration, 3, loss)
    assert screen.getvalue() == ("\rrefining scale 1/2: iteration 1/1\n"
                                 "\rrefining scale 2/2: iteration 1/3, loss 0.2500"
                                 "\rrefining scale 2/2: iteration 2/3, loss 0.1250"
                                 "\rrefining scale 2/2: iteration 3/3, loss 0.0625\n")
    pipe = io.StringIO()
    show = ScaleProgress(pipe)
    show(0, 1, 0, 1, None)
    show(0, 1, 0, 2, 0.5)
    show(0, 1, 1, 2, 0.25)
    assert pipe.getvalue() == "refining scale 1/1: iteration 1/1\nrefining scale 1/1: iteration 2/2, loss 0.2500\n"
