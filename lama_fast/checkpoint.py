"""Safe loading of LaMa generator checkpoints, and conversion to safetensors.

Formats read, all without executing code from the file:

- the Lightning ``.ckpt`` of the original release (generator under ``generator.``);
- the TorchScript ``big-lama.pt`` used by IOPaint (weights under ``...generator.model.``),
  read as a zip archive: its graph is never loaded, compiled or run;
- ``.safetensors`` files with keys ``model.`` or ``generator.model.``;
- bare state dicts saved with ``torch.save`` (or dicts holding one under ``state_dict``).

Pickled data is first read with ``torch.load(weights_only=True)``. Released ``.ckpt``
files also pickle their training configuration (OmegaConf objects, enums, ``typing``
objects), which that loader refuses; those files are then read by a restricted
unpickler that rebuilds tensors and plain containers and replaces every other
global by an inert placeholder, so nothing named in the file is imported or called.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import pickle
import re
import struct
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ._io import atomic_write
from .model import FFCResNetGenerator, build_generator

__all__ = ["CheckpointError", "read_state_dict", "infer_config", "load_generator", "convert"]

PathLike = Union[str, "os.PathLike[str]"]

# Key in the safetensors metadata under which convert() stores the generator's config.
CONFIG_METADATA_KEY = "lama_fast_config"
# Entries of a Lightning checkpoint that belong to training, not to the generator.
SKIPPED_ROOTS = ("discriminator", "val_evaluator", "test_evaluator")
SKIPPED_ROOT_PREFIXES = ("loss_",)
# How many offending keys an error message shows per category.
MAX_LISTED = 10
NOT_A_CHECKPOINT = "is not a PyTorch, TorchScript or safetensors checkpoint"
# How a legacy (non-zip) torch.save file starts: protocol 2, then torch's pickled magic number.
LEGACY_TORCH_HEADER = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the generator."""


class CheckpointNotFoundError(FileNotFoundError, CheckpointError):
    """A checkpoint path that does not exist (catchable as either base class)."""


# --------------------------------------------------------------------------- public API


def read_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read the generator's weights from any supported file, keys relative to the generator."""
    return _read(path).state_dict


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, Any]:
    """Infer the original constructor's keyword config from a generator state dict's shapes."""
    # Two settings leave no trace in the weights and take the released models' values:
    # add_out_act="sigmoid" (every released LaMa ends in a sigmoid) and the FFT
    # normalisation "ortho" (the builder's default, so it is not listed). padding_type
    # is not listed either: it only sets the convs' padding mode, "reflect" by default.
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    return _infer_config(shapes)


def load_generator(
    path: PathLike,
    config: Union[None, str, Mapping[str, Any]] = None,
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
) -> FFCResNetGenerator:
    """Load a generator in eval mode; the config is inferred from the weights unless given."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    checkpoint = _read(path)
    model = _build_and_load(checkpoint, config)
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
    state_dict: Dict[str, torch.Tensor]
    config: Optional[Dict[str, Any]] = None


def _read(path: PathLike) -> _Checkpoint:
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError(errno.ENOENT, "checkpoint file not found", str(path))
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    kind = _sniff(path)
    config = None
    if kind == "safetensors":
        raw, config = _read_safetensors(path)
    elif kind == "zip":
        raw = _read_zip(path)
    else:
        raw = _read_legacy_pickle(path)
    return _Checkpoint(path, _generator_weights(raw, path), config)


def _sniff(path: Path) -> str:
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); it {NOT_A_CHECKPOINT}")
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{":
        # safetensors: little-endian u64 header length, then a JSON header.
        header_len = struct.unpack("<Q", head[:8])[0]
        if header_len < 100 * 2**20:
            if 8 + header_len > size:
                raise CheckpointError(
                    f"{path}: safetensors file is truncated or corrupt (its header claims "
                    f"{header_len} bytes but the file has {size})"
                )
            return "safetensors"
    if head.startswith(LEGACY_TORCH_HEADER):
        return "pickle"
    if len(head) < len(LEGACY_TORCH_HEADER) and LEGACY_TORCH_HEADER.startswith(head):
        raise CheckpointError(f"{path}: file is truncated or corrupt (only {size} bytes)")
    if head[:1] == b"\x80":
        raise CheckpointError(f"{path}: a pickle file, but not one written by torch.save; it {NOT_A_CHECKPOINT}")
    raise CheckpointError(f"{path}: {NOT_A_CHECKPOINT} (unrecognised content, starts with {head[:8]!r})")


def _read_safetensors(path: Path) -> Tuple[Dict[str, torch.Tensor], Optional[Dict[str, Any]]]:
    safe_open = _safetensors().safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers and data
        raise CheckpointError(f"{path}: safetensors file is truncated or corrupt ({exc})") from exc
    config = None
    if CONFIG_METADATA_KEY in metadata:
        try:
            config = json.loads(metadata[CONFIG_METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{path}: metadata {CONFIG_METADATA_KEY!r} is not valid JSON ({exc})") from exc
        if not isinstance(config, dict):
            raise CheckpointError(f"{path}: metadata {CONFIG_METADATA_KEY!r} is not a JSON object")
    return tensors, config


def _read_legacy_pickle(path: Path) -> Any:
    # The pre-1.6 format interleaves pickles and raw storages in one stream; only
    # torch's weights-only loader reads it safely, so there is no fallback here.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise CheckpointError(
                f"{path}: legacy (non-zip) torch.save file holding objects other than tensors "
                "and plain containers; it can only be read by executing its pickle, which this "
                "loader refuses. Re-save the state dict alone with a current PyTorch."
            ) from exc
        raise CheckpointError(f"{path}: file is truncated or corrupt ({exc})") from exc
    except Exception as exc:
        raise CheckpointError(f"{path}: file is truncated or corrupt ({type(exc).__name__}: {exc})") from exc


def _read_zip(path: Path) -> Any:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"{path}: zip archive is truncated or corrupt ({exc})") from exc
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path}: zip archive without a single <archive>/data.pkl; it {NOT_A_CHECKPOINT}")
        prefix = pickles[0][: -len("/data.pkl")]
        if f"{prefix}/constants.pkl" in names or any(n.startswith(f"{prefix}/code/") for n in names):
            return _unpickle_zip(archive, prefix, path)
        # torch.load does not check the records' CRCs; a flipped bit would load as a wrong weight.
        try:
            damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CheckpointError(f"{path}: zip archive is truncated or corrupt ({exc})") from exc
        if damaged is not None:
            raise CheckpointError(f"{path}: file is truncated or corrupt (record {damaged!r} fails its CRC check)")
    # torch.save zip: PyTorch's own weights-only loader first.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass  # non-tensor objects (hyper_parameters of a Lightning file): restricted reader below
    except Exception as exc:
        raise CheckpointError(f"{path}: file is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    with zipfile.ZipFile(path) as archive:
        return _unpickle_zip(archive, prefix, path)


# --------------------------------------------------------------------------- restricted unpickler


class _Inert:
    """Stand-in for a pickled global that is never imported: it only records what the pickle does."""

    __slots__ = ("args", "kwargs", "state", "items", "elements")
    global_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.elements = args, kwargs, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> "_Inert":
        return _inert_class(f"{self.global_name}()")(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def __repr__(self) -> str:
        return f"<unloaded {self.global_name}>"


@lru_cache(maxsize=1024)
def _inert_class(global_name: str) -> type:
    return type("Unloaded", (_Inert,), {"__slots__": (), "global_name": global_name})


@dataclass(frozen=True)
class _StorageType:
    dtype: torch.dtype


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}


@lru_cache(maxsize=1)
def _allowed_globals() -> Dict[str, Any]:
    """Globals a pickle may name and get for real: tensor rebuilders, dtypes, plain containers."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        return dict(_get_allowed_globals())
    except Exception:  # private API: fall back to the few globals a state dict needs
        from torch import _utils

        allowed: Dict[str, Any] = {
            "collections.OrderedDict": OrderedDict,
            "torch.Size": torch.Size,
            "torch.device": torch.device,
            "torch.nn.parameter.Parameter": torch.nn.Parameter,
        }
        for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter",
                     "_rebuild_parameter_with_state"):
            if hasattr(_utils, name):
                allowed[f"torch._utils.{name}"] = getattr(_utils, name)
        return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for torch zip archives that rebuilds tensors and nothing else."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._storages: Dict[str, Any] = {}
        self._swap = False
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist():
            self._swap = archive.read(byteorder).decode().strip() != sys.byteorder

    def find_class(self, module: str, name: str) -> Any:
        if module in ("torch", "torch.cuda", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        allowed = _allowed_globals().get(f"{module}.{name}")
        if allowed is not None and not (isinstance(name, str) and name.endswith("Storage")):
            return allowed
        return _inert_class(f"{module}.{name}")

    def persistent_load(self, saved_id: Any) -> Any:
        if not isinstance(saved_id, tuple) or len(saved_id) != 5:
            raise pickle.UnpicklingError(f"unsupported persistent id {saved_id!r}")
        typename, storage_type, key, _location, numel = saved_id
        if isinstance(typename, bytes):
            typename = typename.decode("ascii")
        if typename != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported persistent id {saved_id!r}")
        key = str(key)
        if key not in self._storages:
            dtype = storage_type.dtype
            nbytes = int(numel) * torch.empty((), dtype=dtype).element_size()
            raw = self._archive.read(f"{self._prefix}/data/{key}")
            if len(raw) < nbytes:
                raise pickle.UnpicklingError(f"storage {key} holds {len(raw)} bytes, expected {nbytes}")
            untyped = torch.UntypedStorage.from_buffer(raw[:nbytes], dtype=torch.uint8) if nbytes else torch.UntypedStorage(0)
            if self._swap:
                untyped.byteswap(dtype)
            self._storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        return self._storages[key]


def _unpickle_zip(archive: zipfile.ZipFile, prefix: str, path: Path) -> Any:
    try:
        return _RestrictedUnpickler(archive.read(f"{prefix}/data.pkl"), archive, prefix).load()
    except (zipfile.BadZipFile, KeyError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: file is truncated or corrupt ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:
        raise CheckpointError(
            f"{path}: could not read the pickled data ({type(exc).__name__}: {exc}); the file is "
            "truncated or corrupt, or holds objects this loader does not rebuild"
        ) from exc


# --------------------------------------------------------------------------- finding the generator


def _children(node: Any) -> List[Tuple[str, Any]]:
    if isinstance(node, Mapping):
        return [(str(k), v) for k, v in node.items() if isinstance(k, (str, int))]
    if isinstance(node, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(node)]
    if isinstance(node, _Inert):
        states = node.state if isinstance(node.state, tuple) else (node.state,)
        out: List[Tuple[str, Any]] = []
        for state in (*states, node.items):
            if not isinstance(state, Mapping):
                continue
            for key, value in state.items():
                # A pickled nn.Module keeps its tensors and children in these dicts,
                # which state_dict() names flatten away.
                if key in ("_parameters", "_buffers", "_modules") and isinstance(value, Mapping):
                    out += [(str(k), v) for k, v in value.items()]
                elif isinstance(key, (str, int)):
                    out.append((str(key), value))
        return out
    return []


def _flatten_tensors(root: Any) -> Dict[str, torch.Tensor]:
    """Every tensor reachable through dicts, sequences and placeholders, by dotted name."""
    found: Dict[str, torch.Tensor] = {}
    seen: set = set()
    stack: List[Tuple[str, Any]] = [("", root)]
    while stack:
        name, node = stack.pop()
        if isinstance(node, torch.Tensor):
            found.setdefault(name, node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        children = _children(node)
        stack += [(f"{name}.{key}" if name else key, child) for key, child in reversed(children)]
    return found


def _is_skipped(key: str) -> bool:
    root = key.split(".", 1)[0]
    return root in SKIPPED_ROOTS or root.startswith(SKIPPED_ROOT_PREFIXES)


_GENERATOR_MODEL = re.compile(r"(?:^|\.)generator\.model\.")


def _generator_weights(raw: Any, path: Path) -> Dict[str, torch.Tensor]:
    if isinstance(raw, Mapping) and "state_dict" in raw:
        if not isinstance(raw["state_dict"], Mapping):
            raise CheckpointError(
                f"{path}: no generator weights found: its 'state_dict' entry is "
                f"{_describe(raw['state_dict'])}, not a dict of tensors (top-level keys: "
                f"{_preview(raw.keys())})"
            )
        raw = raw["state_dict"]
    tensors = {k: v for k, v in _flatten_tensors(raw).items() if not _is_skipped(k)}
    prefixes: Dict[str, int] = {}
    for key in tensors:
        match = _GENERATOR_MODEL.search(key)
        if match:
            prefix = key[: match.end() - len("model.")]
            prefixes[prefix] = prefixes.get(prefix, 0) + 1
    if len(prefixes) > 1:
        found = ", ".join(f"{p!r} ({n} tensors)" for p, n in prefixes.items())
        raise CheckpointError(f"{path}: several generators found, under {found}; cannot tell which to load")
    if prefixes:
        (prefix,) = prefixes
        weights = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    else:
        weights = {k: v for k, v in tensors.items() if k.startswith("model.")}
    if not weights:
        if tensors:
            seen = f"it holds {len(tensors)} tensors, e.g. {_preview(tensors)}"
        elif isinstance(raw, Mapping):
            seen = f"it holds no tensors; its keys: {_preview(raw.keys())}"
        else:
            seen = f"it holds no tensors, only {_describe(raw)}"
        raise CheckpointError(
            f"{path}: no generator weights found (expected keys under 'generator.model.' or "
            f"starting with 'model.'); {seen}"
        )
    return {k: v.detach() for k, v in weights.items()}


def _describe(obj: Any) -> str:
    return repr(obj) if isinstance(obj, _Inert) else f"a {type(obj).__name__}"


def _preview(keys: Any, limit: int = 5) -> str:
    keys = [str(k) for k in keys]
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


# --------------------------------------------------------------------------- building and checking


def _build_and_load(checkpoint: _Checkpoint, config: Union[None, str, Mapping[str, Any]]) -> FFCResNetGenerator:
    path, weights = checkpoint.path, checkpoint.state_dict
    from_caller = config is not None
    if from_caller:
        source = f"config {config!r}" if isinstance(config, str) else "the given config"
    elif checkpoint.config is not None:
        config, source = checkpoint.config, f"the config stored in the file's {CONFIG_METADATA_KEY!r} metadata"
    else:
        try:
            config = infer_config(weights)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        source = "the config inferred from its weights"
    # Built on the meta device: the weights come from the file, so initialising them is wasted work.
    try:
        with torch.device("meta"):
            model = build_generator(config)
    except (ValueError, TypeError) as exc:
        if from_caller:
            raise
        raise CheckpointError(f"{path}: cannot build a generator from {source}: {exc}") from exc
    expected = model.state_dict()
    _check_keys(path, source, weights, expected)
    converted = {}
    for key, target in expected.items():
        if key in weights:
            converted[key] = weights[key].to(dtype=target.dtype)
        else:  # only num_batches_tracked may be absent (older files); it does not affect eval
            converted[key] = torch.zeros((), dtype=target.dtype)
    model.load_state_dict(converted, strict=True, assign=True)
    return model


def _check_keys(path: Path, source: str, weights: Mapping[str, torch.Tensor],
                expected: Mapping[str, torch.Tensor]) -> None:
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


# --------------------------------------------------------------------------- config inference


@dataclass
class _Layer:
    """Channel counts of one FFC_BN_ACT layer, as far as its weights show them."""

    prefix: str
    in_local: int
    in_global: int
    out_local: int
    out_global: int
    lfu: bool
    gated: bool

    @property
    def in_channels(self) -> int:
        return self.in_local + self.in_global

    @property
    def out_channels(self) -> int:
        return self.out_local + self.out_global


def _first_dim(shapes: Mapping[str, Tuple[int, ...]], dim: int, *keys: str) -> Optional[int]:
    # Several weights show the same count: take whichever is present, so one
    # missing key in a damaged file still leaves the config inferable.
    for key in keys:
        shape = shapes.get(key)
        if shape is not None and len(shape) > dim:
            return shape[dim]
    return None


def _layer(shapes: Mapping[str, Tuple[int, ...]], prefix: str) -> _Layer:
    f = f"{prefix}.ffc."
    in_local = _first_dim(shapes, 1, f + "convl2l.weight", f + "convl2g.weight") or 0
    in_global = _first_dim(shapes, 1, f + "convg2l.weight", f + "convg2g.conv1.0.weight") or 0
    out_local = _first_dim(shapes, 0, f"{prefix}.bn_l.weight", f"{prefix}.bn_l.running_mean",
                           f + "convl2l.weight", f + "convg2l.weight") or 0
    out_global = _first_dim(shapes, 0, f"{prefix}.bn_g.weight", f"{prefix}.bn_g.running_mean",
                            f + "convl2g.weight", f + "convg2g.conv2.weight") or 0
    return _Layer(
        prefix, in_local, in_global, out_local, out_global,
        lfu=any(k.startswith(f + "convg2g.lfu.") for k in shapes),
        gated=any(k.startswith(f + "gate.") for k in shapes),
    )


def _ratio(observations: Sequence[Tuple[int, int]]) -> Union[int, float]:
    """The ratio r with int(total * r) == part for (global, total) channel counts, as short a decimal as possible."""
    # When the layers disagree (a damaged file), the ratio that fits most of them wins,
    # so the key check can then name the odd tensors instead of inference failing.
    observations = [(part, total) for part, total in observations if total > 0]
    if not observations:
        return 0
    candidates: List[Union[int, float]] = []
    for part, total in observations:
        if part == 0:
            candidates.append(0)
        elif part == total:
            candidates.append(1)
        else:
            candidates += [round(part / total, digits) for digits in range(1, 10)]
            exact = part / total
            # float rounding can put part/total just below the value that int() needs
            candidates += [exact, math.nextafter(exact, 2.0), math.nextafter(math.nextafter(exact, 2.0), 2.0)]

    def score(r: Union[int, float]) -> Tuple[int, int]:
        fitted = sum(int(total * r) == part for part, total in observations)
        return fitted, -len(repr(r))

    return max(candidates, key=score)


_FFC_LAYER = re.compile(r"^model\.(\d+)\.ffc\.")
_BLOCK_LAYER = re.compile(r"^model\.(\d+)\.conv([12])\.ffc\.")
_PLAIN_WEIGHT = re.compile(r"^model\.(\d+)\.(?:weight|bias)$")


def _infer_config(shapes: Mapping[str, Tuple[int, ...]]) -> Dict[str, Any]:
    layer_ids = sorted({int(m.group(1)) for k in shapes if (m := _FFC_LAYER.match(k))})
    block_ids = sorted({int(m.group(1)) for k in shapes if (m := _BLOCK_LAYER.match(k))})
    if not layer_ids:
        raise CheckpointError(
            "cannot infer the generator configuration: no FFC layers ('model.N.ffc.*') in the "
            f"weights (keys: {_preview(shapes)})"
        )
    init, *downs = [_layer(shapes, f"model.{i}") for i in layer_ids]
    blocks = [_layer(shapes, f"model.{i}.conv{j}") for i in block_ids for j in (1, 2)]
    if init.in_global:
        raise CheckpointError("cannot infer the generator configuration: its first layer has global input channels")

    ngf = init.out_channels
    widths = [ngf] + [d.out_channels for d in downs]
    config: Dict[str, Any] = {
        "input_nc": init.in_channels,
        "output_nc": _output_channels(shapes),
        "ngf": ngf,
        "n_downsampling": len(downs),
        "n_blocks": len(block_ids),
    }
    uncapped = [ngf * 2**k for k in range(len(widths))]
    capped = [w for w, u in zip(widths, uncapped) if w < u]
    if capped:
        config["max_features"] = min(capped)
    elif max(widths) > 1024:  # wider than the constructor's default cap
        config["max_features"] = max(widths)
    config["add_out_act"] = "sigmoid"

    # The last downsampling layer's global output is set by the blocks' ratio_gin,
    # not by downsample_conv_kwargs, so it counts as a resnet observation.
    before_blocks = downs[-1:] if downs else []
    res_gin = _ratio([(l.out_global, l.out_channels) for l in before_blocks]
                     + [(l.in_global, l.in_channels) for l in blocks])
    res_gout = (_ratio([(l.out_global, l.out_channels) for l in blocks])
                if blocks else res_gin)
    config["init_conv_kwargs"] = _stage_kwargs(
        [init], 0, _ratio([(init.out_global, init.out_channels)]))
    config["downsample_conv_kwargs"] = _stage_kwargs(
        downs,
        _ratio([(l.in_global, l.in_channels) for l in downs]),
        _ratio([(l.out_global, l.out_channels) for l in downs[:-1]]),
    )
    config["resnet_conv_kwargs"] = _stage_kwargs(blocks, res_gin, res_gout)
    return config


def _stage_kwargs(layers: Sequence[_Layer], ratio_gin: Union[int, float],
                  ratio_gout: Union[int, float]) -> Dict[str, Any]:
    # enable_lfu is False unless LFU weights exist: the constructor defaults it to True,
    # which would add weights to any layer with a global-to-global branch.
    kwargs: Dict[str, Any] = {
        "ratio_gin": ratio_gin,
        "ratio_gout": ratio_gout,
        "enable_lfu": any(l.lfu for l in layers),
    }
    if any(l.gated for l in layers):
        kwargs["gated"] = True
    return kwargs


def _output_channels(shapes: Mapping[str, Tuple[int, ...]]) -> int:
    plain = [(int(m.group(1)), k) for k in shapes if (m := _PLAIN_WEIGHT.match(k))]
    if not plain:
        return 3  # the output conv is missing; the key check will say so
    last = max(i for i, _ in plain)
    shape = shapes.get(f"model.{last}.weight") or shapes.get(f"model.{last}.bias")
    return shape[0]


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


def _safetensors() -> Any:
    try:
        import safetensors
    except ImportError as exc:
        raise ImportError("reading or writing .safetensors files needs the 'safetensors' package") from exc
    return safetensors


def _safetensors_torch() -> Any:
    _safetensors()
    import safetensors.torch

    return safetensors.torch
