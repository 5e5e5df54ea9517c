"""Finding the generator's tensors in an unpickled checkpoint, checking them, and reading them.

The checks run in order of cost: names and shapes first (the caller compares them with the
model), then each tensor's dtype and storage bounds, and only then are bytes read, after
which every value must be finite and every BatchNorm variance non-negative.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import torch

from .formats import Source
from .limits import CheckpointError
from .unpickler import Inert, TensorRef

# Entries of a Lightning checkpoint that belong to training, not to the generator.
SKIPPED_ROOTS = ("discriminator", "val_evaluator", "test_evaluator")
SKIPPED_ROOT_PREFIXES = ("loss_",)
WEIGHT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# BatchNorm's step counter: an integer in files saved by PyTorch, a float in some others.
COUNTER_DTYPES = WEIGHT_DTYPES + (torch.int64, torch.int32)
# How deep a tensor may sit in the file's containers (big-lama's weights sit 8 levels down).
MAX_NAME_DEPTH = 64
_GENERATOR_MODEL = re.compile(r"(?:^|\.)generator\.model\.")

Leaf = Union[TensorRef, Inert]


def _is_tensor_call(node: Any) -> bool:
    """A tensor pickled through a rebuilder we do not run (sparse, quantized, meta, subclass)."""
    return isinstance(node, Inert) and node.global_name.startswith(("torch._utils._rebuild", "torch._tensor._rebuild"))


def _children(node: Any) -> List[Tuple[str, Any]]:
    if isinstance(node, Mapping):
        return [(str(k), v) for k, v in node.items() if isinstance(k, (str, int))]
    if isinstance(node, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(node)]
    if isinstance(node, Inert):
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


def flatten(root: Any) -> Dict[str, Leaf]:
    """Every tensor reachable through dicts, sequences and placeholders, by dotted name."""
    found: Dict[str, Leaf] = {}
    seen: set = set()
    stack: List[Tuple[str, Any, int]] = [("", root, 0)]
    while stack:
        name, node, depth = stack.pop()
        if isinstance(node, TensorRef) or _is_tensor_call(node):
            found.setdefault(name, node)
            continue
        # State-dict names are a few levels deep; deeper nesting would only make names long.
        if id(node) in seen or depth >= MAX_NAME_DEPTH:
            continue
        seen.add(id(node))
        stack += [(f"{name}.{key}" if name else key, child, depth + 1) for key, child in reversed(_children(node))]
    return found


def _is_skipped(key: str) -> bool:
    root = key.split(".", 1)[0]
    return root in SKIPPED_ROOTS or root.startswith(SKIPPED_ROOT_PREFIXES)


def describe(obj: Any) -> str:
    return repr(obj) if isinstance(obj, Inert) else f"a {type(obj).__name__}"


def preview(keys: Any, limit: int = 5) -> str:
    keys = [str(k) for k in keys]
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def generator_refs(raw: Any, path: Path) -> Dict[str, TensorRef]:
    """The generator's tensors (as references), keys relative to the generator."""
    if isinstance(raw, Mapping) and "state_dict" in raw:
        if not isinstance(raw["state_dict"], Mapping):
            raise CheckpointError(
                f"{path}: no generator weights found: its 'state_dict' entry is "
                f"{describe(raw['state_dict'])}, not a dict of tensors (top-level keys: {preview(raw.keys())})"
            )
        raw = raw["state_dict"]
    tensors = {k: v for k, v in flatten(raw).items() if not _is_skipped(k)}
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
            seen = f"it holds {len(tensors)} tensors, e.g. {preview(tensors)}"
        elif isinstance(raw, Mapping):
            seen = f"it holds no tensors; its keys: {preview(raw.keys())}"
        else:
            seen = f"it holds no tensors, only {describe(raw)}"
        raise CheckpointError(
            f"{path}: no generator weights found (expected keys under 'generator.model.' or "
            f"starting with 'model.'); {seen}"
        )
    unsupported = [f"{k} ({v.global_name.rstrip('()')})" for k, v in weights.items() if isinstance(v, Inert)]
    if unsupported:
        raise CheckpointError(
            f"{path}: tensor {unsupported[0]} is not a dense tensor (sparse, quantized, meta or a subclass); "
            f"LaMa weights are plain dense tensors"
            + (f" ({len(unsupported) - 1} more like it)" if len(unsupported) > 1 else "")
        )
    return weights  # type: ignore[return-value]


def check_refs(path: Path, refs: Mapping[str, TensorRef]) -> None:
    """Dtypes and storage bounds of every tensor, before any byte is read."""
    for key, ref in refs.items():
        allowed = COUNTER_DTYPES if key.endswith("num_batches_tracked") else WEIGHT_DTYPES
        if ref.dtype not in allowed:
            raise CheckpointError(
                f"{path}: tensor {key} has dtype {ref.dtype}; LaMa weights are float16, bfloat16, float32 "
                "or float64"
            )
        numel, storage = ref.numel, ref.storage
        if numel:
            last = ref.offset + sum((s - 1) * st for s, st in zip(ref.size, ref.stride))
            if last >= storage.numel or numel > storage.numel:
                raise CheckpointError(
                    f"{path}: tensor {key} of shape {list(ref.size)} reaches past its storage of "
                    f"{storage.numel:,} elements (offset {ref.offset}, stride {list(ref.stride)})"
                )


def materialise(path: Path, refs: Mapping[str, TensorRef], source: Source) -> Dict[str, torch.Tensor]:
    """Read the tensors (each storage once), then check their values."""
    check_refs(path, refs)
    storages: Dict[str, torch.Tensor] = {}
    out: Dict[str, torch.Tensor] = {}
    for key, ref in refs.items():
        raw = storages.get(ref.storage.key)
        if raw is None:
            raw = storages[ref.storage.key] = source.storage(ref.storage)
        flat = raw.view(ref.dtype) if raw.numel() else torch.empty(0, dtype=ref.dtype)
        if ref.is_contiguous_view():
            tensor = flat[ref.offset:ref.offset + ref.numel].view(ref.size)
        else:
            tensor = torch.as_strided(flat, ref.size, ref.stride, ref.offset).clone()
        out[key] = tensor
    check_values(path, out)
    return out


def check_values(path: Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Every value finite, every BatchNorm variance non-negative; the error names the tensor."""
    for key, tensor in tensors.items():
        if not tensor.is_floating_point() or not tensor.numel():
            continue
        # One pass without a temporary: NaN propagates into both ends, an infinity shows at one.
        low, high = (float(v) for v in torch.aminmax(tensor))
        if not (math.isfinite(low) and math.isfinite(high)):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{path}: tensor {key} holds {bad:,} NaN or infinite value(s)")
        if key.endswith("running_var") and low < 0:
            negative = int((tensor < 0).sum())
            raise CheckpointError(
                f"{path}: tensor {key} holds {negative:,} negative value(s); a BatchNorm variance "
                "cannot be negative"
            )
