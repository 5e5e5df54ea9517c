"""Safe loading of LaMa generator checkpoints, and conversion to safetensors.

Formats read, all without executing or importing anything named in the file:

- the Lightning ``.ckpt`` of the original release (generator under ``generator.``);
- the TorchScript ``big-lama.pt`` used by IOPaint (weights under ``...generator.model.``),
  read as a zip archive: its graph is never loaded, compiled or run;
- ``.safetensors`` files with keys ``model.`` or ``generator.model.``;
- bare state dicts saved with ``torch.save``, zip or legacy (or dicts holding one under ``state_dict``).

Pickles are run by the project's own reader (:mod:`.unpickler`), which builds plain data
and tensor references only; every size a file claims is checked against :mod:`.limits`
before anything is allocated, and the generator's weights are checked (names, shapes,
dtypes, storage bounds, finite values) before a model is built from them.

Layout: :mod:`.limits` (error type, budgets), :mod:`.unpickler`, :mod:`.formats` (zip,
legacy, safetensors), :mod:`.weights` (finding and checking the generator's tensors),
:mod:`.config` (inferring and checking the constructor config); this module is the API.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch

from .._io import atomic_write
from ..model import FFCResNetGenerator, build_generator
from . import config as _config
from .formats import Source, read_raw
from .limits import MAX_CONFIG_BYTES, CheckpointError, CheckpointNotFoundError
from .unpickler import TensorRef
from .weights import generator_refs, materialise

__all__ = ["CheckpointError", "CheckpointNotFoundError", "read_state_dict", "infer_config", "load_generator",
           "convert"]

PathLike = Union[str, "os.PathLike[str]"]

# Key in the safetensors metadata under which convert() stores the generator's config.
CONFIG_METADATA_KEY = "lama_fast_config"
# How many offending keys an error message shows per category.
MAX_LISTED = 10


# --------------------------------------------------------------------------- public API


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read the generator's weights from any supported file, keys relative to the generator."""
    checkpoint = _read(path)
    return materialise(checkpoint.path, checkpoint.refs, checkpoint.source)


def infer_config(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    """Infer the original constructor's keyword config from a generator state dict's shapes."""
    return _config.infer_config({k: tuple(v.shape) for k, v in state_dict.items()})


def load_generator(
    path: PathLike,
    config: Union[None, str, Mapping[str, Any]] = None,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FFCResNetGenerator:
    """Load a generator in eval mode; the config is inferred from the weights unless given."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    model = _build_and_load(_read(path), config)
    return model.to(device=torch.device(device), dtype=dtype).eval()


def convert(src: PathLike, dst: PathLike) -> Path:
    """Write the generator of ``src`` alone to the ``.safetensors`` file ``dst``, config included."""
    src_path, dst_path = Path(src), Path(dst)
    if dst_path.suffix.lower() != ".safetensors":
        raise CheckpointError(
            f"{dst_path}: convert writes safetensors files only; give a destination ending in "
            f".safetensors (got {dst_path.suffix or 'no extension'!r})"
        )
    if _same_file(src_path, dst_path):
        raise CheckpointError(f"{dst_path}: refusing to overwrite the source checkpoint {src_path}")
    save_file = _safetensors_torch().save_file
    model = _build_and_load(_read(src_path), None)
    # Fresh contiguous copies: safetensors refuses tensors that share memory.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", CONFIG_METADATA_KEY: json.dumps(model.config, sort_keys=True)}
    atomic_write(dst_path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return dst_path


# --------------------------------------------------------------------------- reading files


@dataclass
class _Checkpoint:
    path: Path
    refs: Dict[str, TensorRef]
    source: Source
    config: Optional[Dict[str, Any]] = None


def _read(path: PathLike) -> _Checkpoint:
    path = Path(path)
    tree, source, metadata = read_raw(path)
    config = _stored_config(path, metadata) if metadata else None
    return _Checkpoint(path, generator_refs(tree, path), source, config)


def _stored_config(path: Path, metadata: Mapping[str, str]) -> Optional[Dict[str, Any]]:
    text = metadata.get(CONFIG_METADATA_KEY)
    if text is None:
        return None
    where = f"{path}: metadata {CONFIG_METADATA_KEY!r}"
    if len(text) > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{where} is {len(text):,} characters; a generator config is under {MAX_CONFIG_BYTES:,}")
    try:
        config = json.loads(text)
    except RecursionError:
        raise CheckpointError(f"{where} is nested too deeply to be a generator config") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{where} is not a JSON object")
    _config.check_config(config, where)
    return config


# --------------------------------------------------------------------------- building and checking


def _build_and_load(checkpoint: _Checkpoint, config: Union[None, str, Mapping[str, Any]]) -> FFCResNetGenerator:
    path, refs = checkpoint.path, checkpoint.refs
    from_caller = config is not None
    if from_caller:
        source = f"config {config!r}" if isinstance(config, str) else "the given config"
    elif checkpoint.config is not None:
        config, source = checkpoint.config, f"the config stored in the file's {CONFIG_METADATA_KEY!r} metadata"
    else:
        try:
            config = _config.infer_config({k: v.shape for k, v in refs.items()})
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        source = "the config inferred from its weights"
    # Built on the meta device: the weights come from the file, so initialising them is wasted work.
    try:
        with torch.device("meta"):
            model = build_generator(config)
    except (ValueError, TypeError) as exc:
        if from_caller:
            raise
        raise CheckpointError(f"{path}: cannot build a generator from {source}: {exc}") from None
    expected = model.state_dict()
    # Names and shapes are checked before a byte of tensor data is read.
    _check_keys(path, source, refs, expected)
    weights = materialise(path, refs, checkpoint.source)
    converted = {}
    for key, target in expected.items():
        if key in weights:
            converted[key] = weights[key].to(dtype=target.dtype)
        else:  # only num_batches_tracked may be absent (older files); it does not affect eval
            converted[key] = torch.zeros((), dtype=target.dtype)
    model.load_state_dict(converted, strict=True, assign=True)
    return model


def _check_keys(path: Path, source: str, weights: Mapping[str, Any], expected: Mapping[str, torch.Tensor]) -> None:
    missing = [k for k in expected if k not in weights and not k.endswith("num_batches_tracked")]
    unexpected = sorted((k for k in weights if k not in expected), key=_natural_key)
    mismatched = [
        f"{k} (file {list(weights[k].shape)}, model {list(expected[k].shape)})"
        for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{path}: the checkpoint does not fit the generator built from {source}:"]
    for label, items in (("missing keys", missing), ("unexpected generator keys", unexpected),
                         ("shape mismatches", mismatched)):
        if items:
            more = f", ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
            lines.append(f"  {len(items)} {label}: {', '.join(items[:MAX_LISTED])}{more}")
    raise CheckpointError("\n".join(lines))


# --------------------------------------------------------------------------- helpers


def _natural_key(key: str) -> List[Union[int, str]]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _safetensors_torch() -> Any:
    try:
        import safetensors.torch
    except ImportError as exc:
        raise ImportError("writing .safetensors files needs the 'safetensors' package") from exc
    return safetensors.torch

