"""Checkpoint loading: every format a LaMa user has, safety against pickled code, and bad files."""

from __future__ import annotations

import builtins
import contextlib
import enum
import json
import os
import pickle
import struct
import subprocess
import sys
import types
import typing
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from lama_fast.checkpoint import CheckpointError, convert, infer_config, load_generator, read_state_dict
from configs import TINY_CONFIG
from lama_fast.model import NAMED_CONFIGS, build_generator
from lama_fast.model.random import random_generator

safetensors_torch = pytest.importorskip("safetensors.torch")

TRAINING_ENTRIES = {
    "discriminator.model0.0.weight": torch.ones(2, 3),
    "loss_resnet_pl.impl.conv1.weight": torch.ones(4),
    "val_evaluator.scores.ssim.weight": torch.ones(1),
}


# --------------------------------------------------------------------------- objects pickled into files


class Flavor(enum.Enum):
    ORTHO = "ortho"


class DictConfig:
    """Pretends to be omegaconf's DictConfig: pickled by reference, rejected by weights_only loading."""

    def __init__(self, content: dict) -> None:
        self._content = content
        self._metadata = {"ref_type": typing.Any, "flavor": Flavor.ORTHO, "flags": {"readonly": False}}


DictConfig.__module__ = "omegaconf.dictconfig"


@contextlib.contextmanager
def fake_omegaconf():
    """Make DictConfig picklable under its OmegaConf name only while a file is written."""
    package, submodule = types.ModuleType("omegaconf"), types.ModuleType("omegaconf.dictconfig")
    submodule.DictConfig = DictConfig
    package.dictconfig = submodule
    sys.modules.update({"omegaconf": package, "omegaconf.dictconfig": submodule})
    try:
        yield
    finally:
        del sys.modules["omegaconf"], sys.modules["omegaconf.dictconfig"]


class ShellPayload:
    """Runs a shell command when unpickled by a loader that executes pickles."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch '{self.sentinel}'",)


class ExecPayload:
    """Runs Python code that writes a file when unpickled by a loader that executes pickles."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return builtins.exec, (f"open({str(self.sentinel)!r}, 'w').write('pwned')",)


# --------------------------------------------------------------------------- helpers


def randomised(config) -> nn.Module:
    """Seeded random weights, with a batch count that shows whether it survives loading."""
    model = random_generator(config, seed=0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.num_batches_tracked.fill_(123)
    return model


def source_state_dict(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def lightning_ckpt(state_dict: dict, hyper_parameters=None) -> dict:
    """The layout of the released Lightning checkpoints."""
    return {
        "epoch": 40,
        "global_step": 1_000_000,
        "pytorch-lightning_version": "1.2.9",
        "state_dict": {**{f"generator.{k}": v for k, v in state_dict.items()}, **TRAINING_ENTRIES},
        "hyper_parameters": hyper_parameters if hyper_parameters is not None else {"lr": 0.001},
    }


def save_lightning(path: Path, state_dict: dict, hyper_parameters=None) -> Path:
    with fake_omegaconf():
        torch.save(lightning_ckpt(state_dict, hyper_parameters), path)
    return path


class InpaintingModule(nn.Module):
    """The training module's inference forward: mask, concatenate the mask, generate, blend."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        masked = torch.cat([image * (1 - mask), mask], dim=1)
        return mask * self.generator(masked) + (1 - mask) * image


class IOPaintWrapper(nn.Module):
    """The module traced into big-lama.pt: it holds the training module as ``model``."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.model = InpaintingModule(generator)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(image, mask)


def save_torchscript(path: Path, generator: nn.Module) -> Path:
    image = torch.rand(1, 3, 64, 64)
    mask = (torch.rand(1, 1, 64, 64) > 0.5).float()
    with torch.no_grad():
        traced = torch.jit.trace(IOPaintWrapper(generator).eval(), (image, mask), check_trace=False)
    torch.jit.save(traced, str(path))
    return path


def assert_same_tensors(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key


def shapes(state_dict: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state_dict.items()}


def meta_state_dict(config) -> dict:
    with torch.device("meta"):
        return build_generator(config).state_dict()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def golden(golden_dir) -> Path:
    return golden_dir


@pytest.fixture(scope="module")
def manifest(golden) -> dict:
    return json.loads((golden / "lama_state_dict_manifest.json").read_text())


@pytest.fixture(scope="module")
def big_lama():
    model = randomised("big-lama")
    return model, source_state_dict(model)


@pytest.fixture(scope="module")
def big_lama_files(tmp_path_factory, big_lama) -> dict:
    model, sd = big_lama
    root = tmp_path_factory.mktemp("big_lama")
    safetensors_torch.save_file({f"generator.{k}": v.contiguous() for k, v in sd.items()},
                                str(root / "generator.safetensors"))
    torch.save(sd, root / "generator.pth")
    return {
        "lightning": save_lightning(root / "best.ckpt", sd, DictConfig({"generator": {"kind": "ffc_resnet"}})),
        "torchscript": save_torchscript(root / "big-lama.pt", model),
        "safetensors": root / "generator.safetensors",
        "bare": root / "generator.pth",
    }


@pytest.fixture(scope="module")
def tiny():
    return source_state_dict(randomised(TINY_CONFIG))


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory, tiny) -> Path:
    return save_lightning(tmp_path_factory.mktemp("tiny") / "tiny.ckpt", tiny)


def assert_clean(*sentinels: Path) -> None:
    for sentinel in sentinels:
        assert not sentinel.exists(), f"code from the checkpoint ran: {sentinel} was created"


# --------------------------------------------------------------------------- golden checkpoint


def test_golden_checkpoint_loads_with_inferred_config(golden):
    path = golden / "tiny" / "checkpoint.ckpt"
    raw = torch.load(path, weights_only=True)
    want = {k[len("generator."):]: v for k, v in raw["state_dict"].items() if k.startswith("generator.")}

    sd = read_state_dict(path)
    assert_same_tensors(sd, want)
    assert not any(k.startswith(("discriminator", "loss_")) for k in sd)

    config = infer_config(sd)
    for field in ("input_nc", "output_nc", "ngf", "n_downsampling", "n_blocks", "add_out_act",
                  "init_conv_kwargs", "downsample_conv_kwargs", "resnet_conv_kwargs"):
        assert config[field] == raw["generator_config"][field], field

    model = load_generator(path)
    assert not model.training
    loaded = model.state_dict()
    assert shapes(loaded) == shapes(want)
    for key, value in want.items():
        # The file stores num_batches_tracked as float32; the model keeps int64.
        assert loaded[key].dtype == (torch.int64 if key.endswith("num_batches_tracked") else torch.float32)
        assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key


# --------------------------------------------------------------------------- config inference


@pytest.mark.parametrize("name", ["big-lama", "lama-fourier"])
def test_infer_config_of_released_layouts(manifest, name):
    sd = {k[len("generator."):]: torch.empty(s, device="meta") for k, s in manifest[name]["state_dict"].items()}
    config = infer_config(sd)
    assert config == NAMED_CONFIGS[name]
    assert config == manifest[name]["config"]
    assert shapes(meta_state_dict(config)) == shapes(sd)


@pytest.mark.parametrize("config", [
    {**TINY_CONFIG, "input_nc": 5, "output_nc": 1, "n_blocks": 0},
    {**TINY_CONFIG, "ngf": 32, "n_downsampling": 3, "max_features": 96},
    {**TINY_CONFIG, "resnet_conv_kwargs": {"ratio_gin": 0.5, "ratio_gout": 0.5, "enable_lfu": True}},
    {**TINY_CONFIG, "resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75, "enable_lfu": False,
                                           "gated": True}},
    {**TINY_CONFIG, "ngf": 10, "n_downsampling": 1,
     "resnet_conv_kwargs": {"ratio_gin": 0.3, "ratio_gout": 0.3, "enable_lfu": False}},
    {**TINY_CONFIG, "init_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0.5, "enable_lfu": False},
     "downsample_conv_kwargs": {"ratio_gin": 0.5, "ratio_gout": 0.5, "enable_lfu": True}, "n_downsampling": 3},
], ids=["no-blocks-5in-1out", "max-features", "lfu-half", "gated", "ratio-0.3", "global-downsampling"])
def test_infer_config_round_trips_layout(config):
    sd = meta_state_dict(config)
    inferred = infer_config(sd)
    assert shapes(meta_state_dict(inferred)) == shapes(sd)
    # The ratios reproduce the channel counts through the constructor's int(channels * ratio).
    assert inferred["resnet_conv_kwargs"]["enable_lfu"] == config["resnet_conv_kwargs"]["enable_lfu"]
    assert inferred["resnet_conv_kwargs"].get("gated", False) == config["resnet_conv_kwargs"].get("gated", False)
    if "max_features" in config:
        assert inferred["max_features"] == config["max_features"]


def test_infer_config_rejects_non_generator_weights():
    with pytest.raises(CheckpointError, match="no FFC layers"):
        infer_config({"model.0.weight": torch.empty(3, 3)})


# --------------------------------------------------------------------------- big-lama in every format


@pytest.mark.parametrize("fmt", ["lightning", "torchscript", "safetensors", "bare"])
def test_big_lama_formats(big_lama, big_lama_files, fmt, golden, manifest):
    _, source = big_lama
    sd = read_state_dict(big_lama_files[fmt])
    want = {k[len("generator."):]: tuple(s) for k, s in manifest["big-lama"]["state_dict"].items()}
    assert shapes(sd) == want
    assert_same_tensors(sd, source)
    assert infer_config(sd) == NAMED_CONFIGS["big-lama"]

    model = load_generator(big_lama_files[fmt])
    assert not model.training
    assert model.config["n_blocks"] == 18
    assert_same_tensors(model.state_dict(), source)


def test_torchscript_graph_is_never_loaded(big_lama, big_lama_files, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the TorchScript graph must not be loaded")

    monkeypatch.setattr(torch.jit, "load", refuse)
    monkeypatch.setattr(torch._C, "import_ir_module", refuse)
    monkeypatch.setattr(torch._C, "import_ir_module_from_buffer", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    with zipfile.ZipFile(big_lama_files["torchscript"]) as archive:
        assert any(n.endswith("/constants.pkl") for n in archive.namelist())
    assert_same_tensors(read_state_dict(big_lama_files["torchscript"]), big_lama[1])


def test_lightning_file_needs_the_restricted_reader(big_lama_files):
    # Proves the fallback is exercised: PyTorch's weights-only loader refuses this file.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(big_lama_files["lightning"], weights_only=True)
    read_state_dict(big_lama_files["lightning"])
    assert "omegaconf" not in sys.modules, "the loader imported a module named in the pickle"


def test_named_config_and_wrong_named_config(big_lama_files):
    assert load_generator(big_lama_files["safetensors"], config="big-lama").config["n_blocks"] == 18
    with pytest.raises(CheckpointError) as info:
        load_generator(big_lama_files["safetensors"], config="lama-fourier")
    message = str(info.value)
    assert "config 'lama-fourier'" in message and "unexpected generator keys" in message
    assert "model.14.conv1." in message and "more" in message
    assert "model.25.weight (file [256], model [3, 64, 7, 7])" in message


def test_lama_fourier_safetensors_with_bare_keys(tmp_path, manifest):
    source = source_state_dict(randomised("lama-fourier"))
    path = tmp_path / "fourier.safetensors"
    safetensors_torch.save_file(source, str(path))
    sd = read_state_dict(path)
    want = {k[len("generator."):]: tuple(s) for k, s in manifest["lama-fourier"]["state_dict"].items()}
    assert shapes(sd) == want
    assert_same_tensors(sd, source)
    model = load_generator(path, dtype=torch.float64)
    assert model.config["n_blocks"] == 9
    assert model.model[1].ffc.convl2l.weight.dtype == torch.float64
    assert torch.equal(model.model[1].ffc.convl2l.weight, source["model.1.ffc.convl2l.weight"].double())


def test_convert_round_trip(big_lama, big_lama_files, tmp_path):
    _, source = big_lama
    dst = convert(big_lama_files["lightning"], tmp_path / "out" / "big-lama.safetensors")
    assert dst == tmp_path / "out" / "big-lama.safetensors"
    assert [p.name for p in dst.parent.iterdir()] == ["big-lama.safetensors"]  # no temp file left
    raw = safetensors_torch.load_file(str(dst))
    assert_same_tensors(raw, source)
    from safetensors import safe_open

    with safe_open(str(dst), framework="pt") as f:
        stored = json.loads(f.metadata()["lama_fast_config"])
    assert build_generator(stored).config == build_generator("big-lama").config
    assert_same_tensors(load_generator(dst).state_dict(), source)


# --------------------------------------------------------------------------- code in pickles never runs


def test_payload_in_hyper_parameters_does_not_run(tiny, tmp_path):
    shell, python = tmp_path / "SHELL_RAN", tmp_path / "PYTHON_RAN"
    hyper = DictConfig({"training": ShellPayload(shell), "visualizer": [ExecPayload(python)]})
    path = save_lightning(tmp_path / "evil.ckpt", tiny, hyper)

    model = load_generator(path)
    assert_clean(shell, python)
    assert_same_tensors(model.state_dict(), tiny)

    # The payloads are live: an executing unpickler does create the sentinels.
    pickle.loads(pickle.dumps([ShellPayload(tmp_path / "live1"), ExecPayload(tmp_path / "live2")]))
    assert (tmp_path / "live1").exists() and (tmp_path / "live2").exists()


def test_payload_replacing_state_dict_is_an_error(tiny, tmp_path):
    sentinel = tmp_path / "RAN"
    ckpt = lightning_ckpt(tiny)
    ckpt["state_dict"] = ShellPayload(sentinel)
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match="no generator weights found") as info:
        load_generator(tmp_path / "evil.ckpt")
    assert "os.system" in str(info.value) or "posix.system" in str(info.value)
    assert_clean(sentinel)


def test_payload_in_place_of_a_weight_is_reported_missing(tiny, tmp_path):
    sentinel = tmp_path / "RAN"
    ckpt = lightning_ckpt(tiny)
    ckpt["state_dict"]["generator.model.1.ffc.convl2l.weight"] = ExecPayload(sentinel)
    torch.save(ckpt, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match=r"1 missing keys: model\.1\.ffc\.convl2l\.weight"):
        load_generator(tmp_path / "evil.ckpt", config=TINY_CONFIG)
    assert_clean(sentinel)


def test_payload_in_torchscript_archive(tmp_path):
    sentinel = tmp_path / "RAN"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"model": ShellPayload(sentinel)}, protocol=2))
        archive.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(CheckpointError, match="no generator weights found"):
        read_state_dict(path)
    assert_clean(sentinel)


def test_legacy_format_with_payload_loads_without_running_it(tiny, tmp_path):
    sentinel = tmp_path / "RAN"
    good, evil = tmp_path / "good.pth", tmp_path / "evil.pth"
    torch.save(tiny, good, _use_new_zipfile_serialization=False)
    torch.save({"state_dict": tiny, "x": ShellPayload(sentinel)}, evil, _use_new_zipfile_serialization=False)
    assert_same_tensors(read_state_dict(good), tiny)
    assert_same_tensors(read_state_dict(evil), tiny)
    assert_clean(sentinel)


def test_other_torch_save_layouts(tiny, tmp_path):
    model = randomised(TINY_CONFIG)
    layouts = {
        "nested.pth": {"state_dict": tiny, "note": "bare keys under state_dict"},
        "module.pt": model,  # a pickled nn.Module: its classes are never imported
        "wrapper.pt": IOPaintWrapper(model),
    }
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        assert_same_tensors(read_state_dict(tmp_path / name), tiny)


# --------------------------------------------------------------------------- weights that do not fit


def test_missing_keys(tiny, tmp_path):
    gone = ["model.4.conv1.ffc.convl2l.weight", "model.2.bn_l.running_var"]
    torch.save({k: v for k, v in tiny.items() if k not in gone}, tmp_path / "g.pth")
    with pytest.raises(CheckpointError) as info:
        load_generator(tmp_path / "g.pth")
    message = str(info.value)
    assert str(tmp_path / "g.pth") in message and "2 missing keys" in message
    assert all(k in message for k in gone)


def test_missing_num_batches_tracked_is_tolerated(tiny, tmp_path):
    torch.save({k: v for k, v in tiny.items() if not k.endswith("num_batches_tracked")}, tmp_path / "g.pth")
    model = load_generator(tmp_path / "g.pth")
    assert int(model.model[1].bn_l.num_batches_tracked) == 0


def test_unexpected_generator_keys(tiny, tmp_path):
    extra = {"model.1.ffc.extra.weight": torch.ones(2), "ema_decay": torch.tensor(0.9)}
    path = save_lightning(tmp_path / "g.ckpt", {**tiny, **extra})
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    message = str(info.value)
    assert "2 unexpected generator keys" in message
    assert "model.1.ffc.extra.weight" in message and "ema_decay" in message
    assert "discriminator" not in message and "loss_resnet_pl" not in message


def test_shape_mismatch(tiny, tmp_path):
    key = "model.4.conv1.ffc.convg2g.fu.conv_layer.weight"
    torch.save({**tiny, key: torch.zeros(3, 3, 1, 1)}, tmp_path / "g.pth")
    with pytest.raises(CheckpointError, match=rf"1 shape mismatches: {key} \(file \[3, 3, 1, 1\], model \[24, 24, 1, 1\]\)"):
        load_generator(tmp_path / "g.pth")


def test_all_problems_reported_at_once(tiny, tmp_path):
    sd = dict(tiny)
    del sd["model.2.bn_l.bias"]
    sd["model.2.bn_l.surplus"] = torch.ones(1)
    sd["model.4.conv2.ffc.convg2g.conv2.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "g.pth")
    with pytest.raises(CheckpointError) as info:
        load_generator(tmp_path / "g.pth")
    message = str(info.value)
    assert "1 missing keys: model.2.bn_l.bias" in message
    assert "1 unexpected generator keys: model.2.bn_l.surplus" in message
    assert "1 shape mismatches: model.4.conv2.ffc.convg2g.conv2.weight (file [1], model [24, 12, 1, 1])" in message


def test_config_stored_in_safetensors_metadata_is_used(tiny, tmp_path):
    path = tmp_path / "g.safetensors"
    config = {**TINY_CONFIG, "add_out_act": "tanh"}
    safetensors_torch.save_file(tiny, str(path), metadata={"lama_fast_config": json.dumps(config)})
    assert isinstance(load_generator(path).model[-1], nn.Tanh)
    assert isinstance(load_generator(path, config=TINY_CONFIG).model[-1], nn.Sigmoid)


# --------------------------------------------------------------------------- files that are not checkpoints


def test_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt") as info:
        read_state_dict(tmp_path / "nope.ckpt")
    assert isinstance(info.value, CheckpointError)


@pytest.mark.parametrize("kind", ["ckpt", "safetensors", "torchscript"])
def test_truncated_file(tiny, tiny_ckpt, tmp_path, kind):
    if kind == "ckpt":
        data = tiny_ckpt.read_bytes()
    elif kind == "safetensors":
        safetensors_torch.save_file(tiny, str(tmp_path / "full"))
        data = (tmp_path / "full").read_bytes()
    else:
        model = build_generator(TINY_CONFIG).eval()
        data_path = save_torchscript(tmp_path / "full.pt", model)
        data = data_path.read_bytes()
    path = tmp_path / f"half.{kind}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_generator(path)
    assert str(path) in str(info.value)


def test_corrupt_storage_is_detected(tiny_ckpt, tmp_path):
    data = bytearray(tiny_ckpt.read_bytes())
    with zipfile.ZipFile(tiny_ckpt) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size > 1000)
    # Flip bytes inside one tensor record's data, past its local header and alignment padding.
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len + 100
    data[start:start + 8] = bytes(255 - b for b in data[start:start + 8])
    path = tmp_path / "corrupt.ckpt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(path)


@pytest.mark.parametrize("content", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64),
    b"model.1.ffc.convl2l.weight = 0.5\nthis is a text file\n",
], ids=["png", "text"])
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "not_a.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is not a PyTorch, TorchScript or safetensors checkpoint") as info:
        load_generator(path)
    assert str(path) in str(info.value)


def test_plain_pickle_is_not_a_checkpoint(tiny, tmp_path):
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"model.1.weight": [1.0, 2.0]}))
    with pytest.raises(CheckpointError, match="not one written by torch.save; it is not a PyTorch"):
        read_state_dict(path)
    legacy = tmp_path / "legacy.pth"
    torch.save(tiny, legacy, _use_new_zipfile_serialization=False)
    legacy.write_bytes(legacy.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_state_dict(legacy)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.touch()
    with pytest.raises(CheckpointError, match="empty.*is not a PyTorch, TorchScript or safetensors checkpoint"):
        read_state_dict(path)


def test_zip_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "archive.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="is not a PyTorch, TorchScript or safetensors checkpoint"):
        read_state_dict(path)


def test_no_generator_weights(tmp_path):
    torch.save({"epoch": 1, "state_dict": dict(TRAINING_ENTRIES)}, tmp_path / "d.ckpt")
    with pytest.raises(CheckpointError, match="no generator weights found") as info:
        read_state_dict(tmp_path / "d.ckpt")
    assert "discriminator.model0.0.weight" in str(info.value)
    torch.save({"conv.weight": torch.ones(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"no generator weights found.*conv\.weight"):
        read_state_dict(tmp_path / "other.pth")


def test_convert_refuses_other_extensions(tiny_ckpt, tmp_path):
    with pytest.raises(CheckpointError, match=r"safetensors files only.*'\.pt'"):
        convert(tiny_ckpt, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_convert_refuses_to_overwrite_source(tiny, tmp_path):
    src = tmp_path / "g.safetensors"
    safetensors_torch.save_file(tiny, str(src))
    before = src.read_bytes()
    with pytest.raises(CheckpointError, match="refusing to overwrite the source"):
        convert(src, tmp_path / "." / "g.safetensors")
    assert src.read_bytes() == before


# --------------------------------------------------------------------------- a real OmegaConf config


def test_real_omegaconf_hyper_parameters_load_without_omegaconf(tiny, tmp_path):
    """Released .ckpt files pickle their training config as OmegaConf objects; reading needs no omegaconf."""
    omegaconf = pytest.importorskip("omegaconf")
    config = omegaconf.OmegaConf.create({
        "generator": {"kind": "ffc_resnet", "ngf": 64, "n_blocks": 18, "add_out_act": "sigmoid",
                      "resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75, "enable_lfu": False}},
        "optimizers": {"generator": {"kind": "adam", "lr": 0.001}},
        "visualizer": {"kind": "directory", "outdir": "${location.out_root_dir}/samples"},
        "location": {"out_root_dir": "/experiments"},
        "losses": [{"kind": "l1", "weight": 10}, {"kind": "perceptual", "weight": 30}],
    })
    path = tmp_path / "best.ckpt"
    torch.save(lightning_ckpt(tiny, config), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    script = (
        "import sys; sys.modules['omegaconf'] = None\n"  # any import of omegaconf now fails
        "import torch\n"
        "from lama_fast.checkpoint import read_state_dict\n"
        f"sd = read_state_dict({str(path)!r})\n"
        "assert 'omegaconf' not in {m for m, v in sys.modules.items() if v is not None}\n"
        "torch.save(sd, sys.argv[1])\n"
    )
    out = tmp_path / "weights.pt"
    done = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert_same_tensors(torch.load(out, weights_only=True), tiny)
