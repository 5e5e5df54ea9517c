"""Which backend runs where: each optional part's reasons, auto's fallback, lama_fast.info() and load()'s checks."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

import lama_fast
from configs import TINY_CONFIG
from lama_fast import _build, _info, available_backends, backends, optimize
from lama_fast.backends import cpu, cuda, reference, triton
from lama_fast.kernels import triton_reasons
from lama_fast.model.random import random_generator
from lama_fast.ops.spectral import spectral_reasons
from lama_fast.ops.winograd import winograd_ops_reasons, winograd_reasons
from lama_fast.rewrite import UnsupportedModelError

INFO_KEYS = {"versions", "cpu", "cpu_features", "threads", "cuda", "extension", "winograd", "cuda_kernels", "triton",
             "backends"}


# --- every optional part answers with a list of reasons ---------------------------------------------

@pytest.mark.parametrize("reasons", [_build.extension_reasons, spectral_reasons, winograd_ops_reasons,
                                     winograd_reasons, cuda.cuda_kernels_reasons, triton_reasons])
def test_every_optional_part_gives_a_list_of_reasons(reasons):
    got = reasons()
    assert isinstance(got, list) and all(isinstance(why, str) and why for why in got)
    got.append("changed by the caller")
    assert "changed by the caller" not in reasons()


@pytest.mark.parametrize("module", [reference, cpu, triton, cuda])
@pytest.mark.parametrize("device,dtype", [("cpu", torch.float32), ("cpu", torch.float16), ("cuda", torch.bfloat16),
                                          ("meta", torch.float64)])
def test_every_backend_gives_a_list_of_reasons(module, device, dtype):
    for model in (None, nn.Identity(), random_generator(TINY_CONFIG)):
        got = module.not_supported_reasons(torch.device(device), dtype, model)
        assert isinstance(got, list) and all(isinstance(why, str) and why for why in got)


def test_the_table_holds_each_backends_module():
    assert list(backends.BACKENDS) == ["triton", "cuda", "cpu", "reference"]
    for name, module in (("reference", reference), ("cpu", cpu), ("triton", triton), ("cuda", cuda)):
        assert backends.BACKENDS[name].not_supported_reasons is module.not_supported_reasons
        assert backends.BACKENDS[name].prepare is module.prepare
    assert backends._cpu_has_bf16 is cpu.cpu_has_bf16


def test_available_backends_joins_each_backends_reasons():
    device = torch.device("cpu")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        want = {name: "; ".join(backend.not_supported_reasons(device, dtype)) or None
                for name, backend in backends.BACKENDS.items()}
        assert available_backends("cpu", dtype) == want


def test_a_given_model_that_is_not_a_lama_generator_is_refused_by_the_rewriting_backends():
    device = torch.device("cpu")
    why = "Identity has no 'model' Sequential of LaMa layers"
    for module in (cpu, triton, cuda):
        assert why in module.not_supported_reasons(device, torch.float32, nn.Identity())
        assert why not in module.not_supported_reasons(device, torch.float32, random_generator(TINY_CONFIG))
    assert reference.not_supported_reasons(device, torch.float32, nn.Identity()) == []
    if available_backends()["cpu"] is None:
        assert cpu.not_supported_reasons(device, torch.float32, random_generator(TINY_CONFIG)) == []
        assert cpu.not_supported_reasons(device, torch.float32, nn.Identity()) == [why]


def test_winograd_reasons_add_the_cpus_kernels_to_the_ops():
    ops = winograd_ops_reasons()
    if ops:
        assert winograd_reasons() == ops
    else:
        from lama_fast.ops.winograd import winograd_isa

        assert (winograd_reasons() == []) == (winograd_isa() != "generic")


# --- auto falls back only into backends it may take -----------------------------------------------------

def _refuse(generator, device, dtype):
    raise UnsupportedModelError("a layer it cannot run")


def _runs_anywhere(device, dtype, model=None):
    return []


@pytest.fixture
def triton_refuses_on_the_cpu(monkeypatch):
    """A table where auto takes triton on the CPU, whose prepare refuses the model, and cuda could run there."""
    table = backends.BACKENDS
    monkeypatch.setitem(table, "triton", dataclasses.replace(
        table["triton"], not_supported_reasons=_runs_anywhere, prepare=_refuse, auto_device_types=("cpu",),
        auto_dtypes=None))
    monkeypatch.setitem(table, "cuda", dataclasses.replace(
        table["cuda"], not_supported_reasons=_runs_anywhere, prepare=lambda generator, device, dtype: nn.Identity()))
    return table


def test_auto_does_not_fall_back_into_a_backend_it_never_takes(triton_refuses_on_the_cpu):
    assert not triton_refuses_on_the_cpu["cuda"].taken_by_auto(torch.device("cpu"), torch.float32)
    fast = optimize(random_generator(TINY_CONFIG, seed=0))
    want = "cpu" if available_backends()["cpu"] is None else "reference"
    assert fast.lama_fast_backend == want, fast.lama_fast_backend_reasons
    assert fast.lama_fast_backend_reasons["triton"] == "this generator is not supported: a layer it cannot run"
    assert fast.lama_fast_backend_reasons["cuda"] is None
    # Named, it runs.
    assert optimize(random_generator(TINY_CONFIG, seed=0), backend="cuda").lama_fast_backend == "cuda"


def test_a_named_backend_that_refuses_the_model_does_not_fall_back(triton_refuses_on_the_cpu):
    with pytest.raises(UnsupportedModelError, match="^backend 'triton' cannot run this generator: a layer it "
                                                    "cannot run$"):
        optimize(random_generator(TINY_CONFIG, seed=0), backend="triton")


def test_when_every_backend_auto_takes_refuses_the_model_the_error_lists_why(monkeypatch, triton_refuses_on_the_cpu):
    for name in ("cpu", "reference"):
        monkeypatch.setitem(triton_refuses_on_the_cpu, name, dataclasses.replace(
            triton_refuses_on_the_cpu[name], not_supported_reasons=_runs_anywhere, prepare=_refuse))
    with pytest.raises(ValueError) as info:
        optimize(random_generator(TINY_CONFIG, seed=0))
    refused = "this generator is not supported: a layer it cannot run"
    assert str(info.value) == (
        f"no backend can run this generator on cpu in torch.float32: triton: {refused}; cuda: auto does not take it "
        f"on cpu in torch.float32 (it runs when named); cpu: {refused}; reference: {refused}")


# --- lama_fast.info() ---------------------------------------------------------------------------------------

def test_info_is_the_whole_picture_as_data():
    data = lama_fast.info()
    assert isinstance(data, dict) and set(data) == INFO_KEYS
    assert data["backends"]["cpu"]["float32"] == available_backends("cpu", torch.float32)
    assert data["backends"]["cpu"]["bfloat16"] == available_backends("cpu", torch.bfloat16)
    assert ("cuda" in data["backends"]) == torch.cuda.is_available()
    assert data["versions"]["lama_fast"] == lama_fast.__version__ and data["versions"]["torch"] == torch.__version__
    assert data["extension"] == _build.extension_reasons() and data["triton"] == triton_reasons()
    assert data["winograd"]["reasons"] == winograd_reasons()
    assert data["cuda_kernels"]["reasons"] == cuda.cuda_kernels_reasons()
    assert set(data["threads"]) == {"intra_op", "inter_op"}
    assert "info" in lama_fast.__all__


def test_format_info_prints_the_component_and_backend_tables():
    data = lama_fast.info()
    text = _info.format_info(data)
    components, backend_table = text.split("\n\n")
    assert components.splitlines()[0].split() == ["|", "component", "|", "status", "|"]
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in components.splitlines()[2:]}
    assert list(rows)[:7] == ["lama_fast", "python", "torch", "numpy", "PIL", "safetensors", "triton"]
    assert rows["extension lama_fast._C"] == ("; ".join(data["extension"]) or "built")
    assert rows["triton kernels"] == ("; ".join(data["triton"]) or "importable")
    assert rows["threads"] == f"{torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op"
    assert backend_table.splitlines()[0].split() == ["|", "backend", "|", "device", "|", "dtype", "|", "status", "|"]
    assert "| reference | cpu    | float32  | available" in backend_table


def test_format_info_words_each_state():
    data = {"versions": {"lama_fast": "1"}, "cpu": "x86", "cpu_features": [], "threads": {"intra_op": 4, "inter_op": 1},
            "cuda": {"available": True, "version": "12.4", "devices": ["GPU A", "GPU B"]}, "extension": [],
            "winograd": {"isa": None, "reasons": ["slow here"]},
            "cuda_kernels": {"reasons": [], "build": "built: 3 sources under csrc/cuda"},
            "triton": ["triton is not installed"], "backends": {"cuda": {"float16": {"cuda": None, "cpu": "no"}}}}
    text = _info.format_info(data)
    assert "| cpu features           | -" in text
    assert "| cuda                   | 12.4: GPU A, GPU B" in text
    assert "| winograd 3x3 kernels   | not used: slow here" in text
    assert "| CUDA kernels           | built: spectral_transform and fourier_unit for CUDA tensors (3 sources under " \
           "csrc/cuda)" in text
    assert "| triton kernels         | triton is not installed" in text
    assert text.endswith("| cuda    | cuda   | float16 | available |\n| cpu     | cuda   | float16 | no        |")
    data.update(extension=["gone"], cuda={"available": False, "version": None, "devices": []})
    text = _info.format_info(data)
    assert "winograd" not in text and "| extension lama_fast._C | gone" in text
    assert "| cuda                   | no CUDA device (CPU build of torch)" in text


def test_python_m_lama_fast_info_prints_the_tables():
    done = subprocess.run([sys.executable, "-m", "lama_fast.info"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("| component ")
    assert re.search(r"^\| extension lama_fast\._C \| ", done.stdout, re.M)
    assert re.search(r"^\| backend +\| device \| dtype +\| status", done.stdout, re.M)
    assert "RuntimeWarning" not in done.stderr


def test_importing_lama_fast_info_keeps_lama_fast_info_callable():
    import lama_fast.info

    assert callable(lama_fast.info) and set(lama_fast.info()) == INFO_KEYS
    assert lama_fast.info.format_info is _info.format_info


# --- load() checks its settings before reading the file ---------------------------------------------------

@pytest.mark.parametrize("settings,error,message", [
    ({"hd_strategy": "tiles"}, ValueError, "hd_strategy must be one of original, crop, resize; got 'tiles'"),
    ({"crop_margin": "8"}, TypeError, "crop_margin must be an integer, got str"),
    ({"resize_limit": 4}, ValueError, "resize_limit must be >= 8, got 4"),
    ({"max_memory": "lots"}, ValueError, "max_memory must look like 4G, 512M or 2000000000; got 'lots'"),
])
def test_load_checks_its_settings_before_reading_the_file(tmp_path, settings, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        lama_fast.Inpainter(nn.Identity(), **settings)
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        lama_fast.load(tmp_path / "missing.ckpt", **settings)


def test_check_settings_gives_what_the_inpainter_keeps():
    settings, max_memory = lama_fast.Inpainter.check_settings(hd_strategy="resize", resize_limit=64, max_memory="3G")
    inpainter = lama_fast.Inpainter(nn.Identity(), hd_strategy="resize", resize_limit=64, max_memory="3G")
    assert (settings, max_memory) == (inpainter.hd, inpainter.max_memory) and max_memory == 3 << 30
    assert lama_fast.Inpainter.check_settings() == (lama_fast.Inpainter(nn.Identity()).hd, None)


def test_load_refuses_an_unknown_setting_before_reading_the_file(tmp_path):
    with pytest.raises(TypeError, match="unexpected keyword argument 'tile_size'"):
        lama_fast.load(tmp_path / "missing.ckpt", tile_size=512)
