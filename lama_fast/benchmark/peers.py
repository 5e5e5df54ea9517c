"""The peers of the end-to-end suite: torch.compile, OpenVINO and ONNX Runtime around the reference generator."""

from __future__ import annotations

import importlib
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict

import torch
from torch import nn

from .core import Unavailable

BENCH_EXTRA = "pip install 'lama_fast[bench]'"


@dataclass
class Runner:
    """A built system: ``fn()`` runs it once on its prepared input."""

    fn: Callable[[], Any]
    build_s: float = 0.0
    note: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)


def import_peer(name: str):
    """The peer's package, or Unavailable saying it is not installed or does not import."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise Unavailable(f"{name} is not installed ({BENCH_EXTRA})") from None
    except Exception as exc:  # installed but broken (ABI clash with this torch, missing library)
        raise Unavailable(f"{name} does not import ({type(exc).__name__}: {exc})") from None


def openvino_runner(generator: nn.Module, x: torch.Tensor, precision: str) -> Runner:
    """``openvino.convert_model`` + ``compile_model("CPU")`` at ``precision`` ('f32' or 'bf16')."""
    ov = import_peer("openvino")
    start = time.perf_counter()
    with torch.no_grad():
        model = ov.convert_model(generator, example_input=x)
    convert_s = time.perf_counter() - start
    start = time.perf_counter()
    config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    compiled = ov.Core().compile_model(model, "CPU", config)
    compile_s = time.perf_counter() - start
    del model
    inputs = [x.numpy()]
    return Runner(lambda: compiled(inputs)[0], convert_s + compile_s,
                  f"convert {convert_s:.1f} s + compile {compile_s:.1f} s",
                  {"convert_s": convert_s, "compile_s": compile_s, "threads": torch.get_num_threads()})


def onnxruntime_runner(generator: nn.Module, x: torch.Tensor) -> Runner:
    """``torch.onnx.export(dynamo=True)`` and an ONNX Runtime CPUExecutionProvider session."""
    ort = import_peer("onnxruntime")
    import_peer("onnx")
    import_peer("onnxscript")
    with tempfile.TemporaryDirectory(prefix="lama_fast_onnx_") as tmp:
        path = os.path.join(tmp, "generator.onnx")
        start = time.perf_counter()
        with torch.no_grad():
            torch.onnx.export(generator, (x,), path, dynamo=True, external_data=True, verbose=False)
        export_s = time.perf_counter() - start
        start = time.perf_counter()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        session_s = time.perf_counter() - start
    feed = {session.get_inputs()[0].name: x.numpy()}
    return Runner(lambda: session.run(None, feed)[0], export_s + session_s,
                  f"export {export_s:.1f} s + session {session_s:.1f} s",
                  {"export_s": export_s, "session_s": session_s, "threads": torch.get_num_threads()})


def compile_runner(generator: nn.Module, x: torch.Tensor) -> Runner:
    """``torch.compile`` (inductor, freezing); the compile happens inside the first call."""
    from torch._inductor import config as inductor_config

    compiled = torch.compile(generator, backend="inductor")

    def run():
        # Freezing applies when the first call compiles; patching it per call keeps the global config untouched.
        with inductor_config.patch(freezing=True):
            return compiled(x)

    return Runner(run, 0.0, "inductor with freezing; the compile happens inside the first call")
