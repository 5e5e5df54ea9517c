"""Hostile checkpoint files: no code runs, the process is unchanged, the error names the problem,
and no load costs more than 400 MB beyond what the process held before it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from configs import TINY_CONFIG
from hostile import ATTACKS, SENTINEL, process_state
from lama_fast import checkpoint
from lama_fast.checkpoint import CheckpointError, load_generator, read_state_dict
from lama_fast.model.random import random_generator

PEAK_EXTRA_MIB = 400


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    model = random_generator(TINY_CONFIG, seed=0)
    path = tmp_path_factory.mktemp("good") / "good.ckpt"
    torch.save({"state_dict": {f"generator.{k}": v for k, v in model.state_dict().items()}}, path)
    load_generator(path)  # the first load imports what loading needs
    return path


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory) -> dict:
    """Every attack's file, each in a folder of its own (where its payload would leave a sentinel)."""
    root = tmp_path_factory.mktemp("hostile")
    files = {}
    for name, attack in ATTACKS.items():
        folder = root / name
        folder.mkdir()
        files[name] = attack.make(folder)
    return files


@pytest.mark.parametrize("name", list(ATTACKS))
def test_hostile_file_is_refused_and_changes_nothing(name, hostile_files, good):
    attack, path = ATTACKS[name], hostile_files[name]
    before = process_state()
    with pytest.raises(CheckpointError) as info:
        getattr(checkpoint, attack.call)(path)
    message = str(info.value)
    assert re.search(attack.error, message), message
    assert message.startswith(f"{path}: "), message
    assert not (path.parent / SENTINEL).exists(), "code from the checkpoint ran"
    assert process_state() == before
    # A good checkpoint still loads, with this loader and with PyTorch's own.
    torch.load(good, weights_only=True)
    assert read_state_dict(good)


def test_payloads_are_live(tmp_path):
    """The payloads do run under an unpickler that executes pickles (so the tests above mean something)."""
    import pickle

    from hostile import run_payload, stop

    pickle.loads(stop(run_payload(tmp_path / SENTINEL)))
    assert (tmp_path / SENTINEL).exists()


def test_peak_memory_of_every_hostile_load(hostile_files):
    names = list(ATTACKS)
    args = []
    for name in names:
        args += [str(hostile_files[name]), ATTACKS[name].call]
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("hostile.py")), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(hostile_files[n]) for n in names]
    for name, row in zip(names, rows):
        assert row["error"] and row["error"].startswith("CheckpointError"), (name, row)
        assert row["peak_extra_mib"] < PEAK_EXTRA_MIB, (name, row)
        assert not row["process_changed"], (name, row)


def test_good_files_still_load_after_the_reader_rewrite(good):
    """A plain torch.save file loads with the weights PyTorch itself reads."""
    want = {k[len("generator."):]: v for k, v in torch.load(good, weights_only=True)["state_dict"].items()}
    got = read_state_dict(good)
    assert sorted(got) == sorted(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def _formats(tmp_path: Path) -> dict:
    """The tiny generator in every format the loader reads."""
    import safetensors.torch

    model = random_generator(TINY_CONFIG, seed=1)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    files = {
        "zip": tmp_path / "g.ckpt",
        "legacy": tmp_path / "g_legacy.pth",
        "safetensors": tmp_path / "g.safetensors",
    }
    torch.save({"state_dict": {f"generator.{k}": v for k, v in sd.items()}}, files["zip"])
    torch.save(sd, files["legacy"], _use_new_zipfile_serialization=False)
    safetensors.torch.save_file(sd, str(files["safetensors"]))
    return files


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_every_truncation_is_a_checkpoint_error(tmp_path, fmt):
    data = _formats(tmp_path)[fmt].read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    for length in sorted({1, 7, 8, 15, 16, 100, *range(0, len(data), max(1, len(data) // 40))} - {0}):
        cut.write_bytes(data[:length])
        with pytest.raises(CheckpointError) as info:
            load_generator(cut)
        assert str(cut) in str(info.value), (length, str(info.value))


@pytest.mark.parametrize("fmt", ["zip", "legacy", "safetensors"])
def test_flipped_bytes_load_or_fail_cleanly(tmp_path, fmt):
    """A corrupted byte anywhere either loads (a weight's bits changed, caught by no format but zip's
    CRC) or is a CheckpointError: never another exception, never a hang."""
    data = bytearray(_formats(tmp_path)[fmt].read_bytes())
    bad = tmp_path / f"flip.{fmt}"
    outcomes = {"loaded": 0, "refused": 0}
    for position in range(0, len(data), max(1, len(data) // 40)):
        flipped = bytearray(data)
        flipped[position] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        try:
            load_generator(bad)
            outcomes["loaded"] += 1
        except CheckpointError:
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0
