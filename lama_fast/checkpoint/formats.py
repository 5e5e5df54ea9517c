"""The file formats a LaMa checkpoint comes in, read into a tree of tensor references.

- a torch zip archive: ``torch.save`` files (the Lightning ``.ckpt`` of the release, bare
  state dicts) and TorchScript ``.pt`` files (IOPaint's ``big-lama.pt``), whose graph is
  never loaded: only ``data.pkl`` and the storage records it names are read;
- the legacy (pre-1.6, non-zip) ``torch.save`` stream;
- ``.safetensors``.

Every reader checks what the file claims against :mod:`.limits` before it allocates, and
returns references (:class:`~.unpickler.TensorRef`); a :class:`Source` reads a storage's
bytes only when the loader asks for it.
"""

from __future__ import annotations

import io
import json
import os
import stat
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from .._io import file_kind
from .limits import (
    MAX_PICKLE_BYTES, MAX_SAFETENSORS_HEADER, MAX_TENSOR_BYTES, MAX_TENSOR_DIMS, MAX_TENSORS,
    MAX_ZIP_RECORDS, NOT_A_CHECKPOINT, CheckpointError, CheckpointNotFoundError,
)
from .unpickler import Inert, PickleTruncated, StorageRef, TensorRef, UnpicklingRefused, read_pickle, storage_persistent_id

# How a legacy (non-zip) torch.save file starts: protocol 2, then torch's pickled magic number.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_TORCH_HEADER = b"\x80\x02\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")
LEGACY_PROTOCOL = 1001
# A compressed record may inflate this much at most (torch writes its records uncompressed).
MAX_INFLATION = 16
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


class Source:
    """Where a checkpoint's storages lie; reads one on demand, within the file's byte budget."""

    def __init__(self, path: Path, budget: int) -> None:
        self.path = path
        self.budget = budget
        self.read_bytes = 0

    def _spend(self, nbytes: int) -> None:
        self.read_bytes += nbytes
        if self.read_bytes > self.budget:
            raise CheckpointError(
                f"{self.path}: the tensors to load add up to more than {self.budget:,} bytes, more than "
                f"a file of {self.path.stat().st_size:,} bytes can hold (limit {MAX_TENSOR_BYTES:,} bytes)")

    def storage(self, ref: StorageRef) -> torch.Tensor:
        """The storage's bytes as a flat uint8 tensor."""
        raise NotImplementedError


def open_regular(path: Path) -> os.stat_result:
    """Stat ``path`` and refuse anything but an existing, non-empty regular file, without reading it."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CheckpointNotFoundError(2, "checkpoint file not found", str(path)) from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"{path}: not a regular file ({file_kind(info.st_mode)}); give a checkpoint file")
    if info.st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); it {NOT_A_CHECKPOINT}")
    return info


def sniff(path: Path, size: int) -> str:
    """``zip``, ``safetensors`` or ``legacy``, from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if len(head) >= 9 and head[8:9] == b"{":
        header_len = struct.unpack("<Q", head[:8])[0]
        if header_len > MAX_SAFETENSORS_HEADER:
            raise CheckpointError(f"{path}: safetensors header of {header_len:,} bytes is larger than the "
                                  f"{MAX_SAFETENSORS_HEADER:,} bytes a LaMa checkpoint needs")
        if 8 + header_len > size:
            raise CheckpointError(f"{path}: safetensors file is truncated or corrupt (its header claims "
                                  f"{header_len} bytes but the file has {size})")
        return "safetensors"
    if head.startswith(LEGACY_TORCH_HEADER):
        return "legacy"
    if len(head) < len(LEGACY_TORCH_HEADER) and LEGACY_TORCH_HEADER.startswith(head):
        raise CheckpointError(f"{path}: file is truncated or corrupt (only {size} bytes)")
    if head[:1] == b"\x80":
        raise CheckpointError(f"{path}: a pickle file, but not one written by torch.save; it {NOT_A_CHECKPOINT}")
    raise CheckpointError(f"{path}: {NOT_A_CHECKPOINT} (unrecognised content, starts with {head[:8]!r})")


class _Bounded(io.RawIOBase):
    """A file read through a window that never asks for more than the file has left."""

    def __init__(self, f: Any, size: int) -> None:
        self._f, self._size = f, size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._size - self._f.tell())
        return self._f.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit: int = -1) -> bytes:
        left = max(0, self._size - self._f.tell())
        return self._f.readline(min(left, 1 << 20) if limit is None or limit < 0 else min(limit, left))

    def tell(self) -> int:
        return self._f.tell()


def _refused(path: Path, exc: UnpicklingRefused) -> CheckpointError:
    if isinstance(exc, PickleTruncated):
        return CheckpointError(f"{path}: file is truncated or corrupt ({exc})")
    return CheckpointError(f"{path}: refused: {exc}")


# --------------------------------------------------------------------------- zip archives


def _zip_entry_count(path: Path, size: int) -> None:
    """Check the central directory's entry count and size before zipfile parses it."""
    with open(path, "rb") as f:
        tail_len = min(size, 22 + 65535)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + 22 > len(tail):
            raise CheckpointError(f"{path}: zip archive is truncated or corrupt (no end-of-archive record)")
        entries, cd_size = struct.unpack("<H", tail[at + 10:at + 12])[0], struct.unpack("<I", tail[at + 12:at + 16])[0]
        if entries == 0xFFFF or cd_size == 0xFFFFFFFF:
            locator = tail[at - 20:at] if at >= 20 else b""
            if locator[:4] != b"PK\x06\x07":
                raise CheckpointError(f"{path}: zip archive is truncated or corrupt (no zip64 locator)")
            record_at = struct.unpack("<Q", locator[8:16])[0]
            if record_at + 56 > size:
                raise CheckpointError(f"{path}: zip archive is truncated or corrupt (zip64 record past the end)")
            f.seek(record_at)
            record = f.read(56)
            if record[:4] != b"PK\x06\x06":
                raise CheckpointError(f"{path}: zip archive is truncated or corrupt (bad zip64 record)")
            entries, cd_size = struct.unpack("<QQ", record[32:48])
    if entries > MAX_ZIP_RECORDS:
        raise CheckpointError(f"{path}: zip archive lists {entries:,} records; a LaMa checkpoint has at most "
                              f"{MAX_ZIP_RECORDS:,}")
    if cd_size > size:
        raise CheckpointError(f"{path}: zip archive is truncated or corrupt (its directory claims {cd_size:,} bytes)")


def _check_names(path: Path, infos: list) -> None:
    seen = set()
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0] or "\x00" in name:
            raise CheckpointError(f"{path}: zip record name {name!r} is not a plain relative path")
        if name in seen:
            raise CheckpointError(f"{path}: zip archive holds the record {name!r} twice")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"{path}: zip record {name!r} uses compression method {info.compress_type}; "
                                  "torch writes its records uncompressed")
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{path}: zip record {name!r} is encrypted")
        seen.add(name)


class ZipSource(Source):
    def __init__(self, path: Path, size: int, archive: zipfile.ZipFile, prefix: str) -> None:
        stored = all(i.compress_type == zipfile.ZIP_STORED for i in archive.infolist())
        super().__init__(path, min(MAX_TENSOR_BYTES, size * (1 if stored else MAX_INFLATION)))
        self.archive, self.prefix = archive, prefix
        self.swap = False

    def record(self, key: str) -> zipfile.ZipInfo:
        try:
            return self.archive.getinfo(f"{self.prefix}/data/{key}")
        except KeyError:
            raise UnpicklingRefused(f"the pickle names storage {key!r}, which the archive does not hold") from None

    def storage(self, ref: StorageRef) -> torch.Tensor:
        info = self.record(ref.key)
        self._spend(ref.nbytes)
        out = torch.empty(ref.nbytes, dtype=torch.uint8)
        try:
            with self.archive.open(info) as f:
                got = f.readinto(memoryview(out.numpy())) if ref.nbytes else 0
                more = f.read(1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error) as exc:
            raise CheckpointError(f"{self.path}: file is truncated or corrupt (record {info.filename!r}: {exc})") from None
        if got != ref.nbytes or more:
            raise CheckpointError(f"{self.path}: file is truncated or corrupt (record {info.filename!r} holds "
                                  f"{'more' if more else got} bytes, expected {ref.nbytes})")
        if self.swap:
            _byteswap(out, ref.dtype)
        return out


def read_zip(path: Path, size: int) -> Tuple[Any, Source]:
    """The unpickled tree of a torch or TorchScript zip archive, and its storage source."""
    _zip_entry_count(path, size)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise CheckpointError(f"{path}: zip archive is truncated or corrupt ({exc})") from None
    infos = archive.infolist()
    _check_names(path, infos)
    pickles = [i for i in infos if i.filename.count("/") == 1 and i.filename.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise CheckpointError(f"{path}: zip archive without a single <archive>/data.pkl; it {NOT_A_CHECKPOINT}")
    data_pkl = pickles[0]
    prefix = data_pkl.filename[: -len("/data.pkl")]
    if data_pkl.file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(f"{path}: its data.pkl claims {data_pkl.file_size:,} bytes; a LaMa checkpoint's is "
                              f"under {MAX_PICKLE_BYTES:,}")
    source = ZipSource(path, size, archive, prefix)
    try:
        order = f"{prefix}/byteorder"
        if order in archive.NameToInfo:
            if archive.getinfo(order).file_size > 16:
                raise CheckpointError(f"{path}: its byteorder record is not 'little' or 'big'")
            text = archive.read(order).decode("ascii", "replace").strip()
            if text not in ("little", "big"):
                raise CheckpointError(f"{path}: its byteorder record says {text!r}, not 'little' or 'big'")
            source.swap = text != sys.byteorder
        with archive.open(data_pkl) as f:
            data = f.read(MAX_PICKLE_BYTES + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error) as exc:
        raise CheckpointError(f"{path}: file is truncated or corrupt ({exc})") from None
    if len(data) != data_pkl.file_size:
        raise CheckpointError(f"{path}: file is truncated or corrupt (data.pkl holds {len(data)} bytes, "
                              f"its record says {data_pkl.file_size})")
    storages: Dict[str, StorageRef] = {}

    def persistent(saved_id: Any) -> StorageRef:
        key, dtype, numel = storage_persistent_id(saved_id)
        known = storages.get(key)
        if known is not None:
            if known.dtype != dtype or known.numel != numel:
                raise UnpicklingRefused(f"storage {key!r} is named with two different types or sizes")
            return known
        ref = StorageRef(key, dtype, numel)
        declared = source.record(key).file_size
        if declared != ref.nbytes:
            raise UnpicklingRefused(f"storage {key!r} claims {numel:,} elements of {dtype} ({ref.nbytes:,} bytes) "
                                    f"but its record holds {declared:,} bytes")
        storages[key] = ref
        return ref

    try:
        tree = read_pickle(io.BytesIO(data), persistent)
    except UnpicklingRefused as exc:
        raise _refused(path, exc) from None
    return tree, source


# --------------------------------------------------------------------------- legacy torch.save


class LegacySource(Source):
    def __init__(self, path: Path, size: int, offsets: Dict[str, int]) -> None:
        super().__init__(path, min(MAX_TENSOR_BYTES, size))
        self.offsets = offsets

    def storage(self, ref: StorageRef) -> torch.Tensor:
        self._spend(ref.nbytes)
        out = torch.empty(ref.nbytes, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.offsets[ref.key])
            got = f.readinto(memoryview(out.numpy())) if ref.nbytes else 0
        if got != ref.nbytes:
            raise CheckpointError(f"{self.path}: file is truncated or corrupt (storage {ref.key!r} is cut short)")
        return out


def read_legacy(path: Path, size: int) -> Tuple[Any, Source]:
    """The unpickled tree of a pre-1.6 torch.save stream, and its storage source."""
    storages: Dict[str, StorageRef] = {}

    def persistent(saved_id: Any) -> Any:
        if isinstance(saved_id, tuple) and saved_id[:1] == ("module",):
            return Inert("<pickled module source>")
        key, dtype, numel = storage_persistent_id(saved_id)
        if key in storages:
            return storages[key]
        storages[key] = ref = StorageRef(key, dtype, numel)
        return ref

    def no_persistent(saved_id: Any) -> Any:
        raise UnpicklingRefused("a persistent id outside the data pickle")

    offsets: Dict[str, int] = {}
    with open(path, "rb") as raw:
        f = _Bounded(raw, size)
        try:
            magic = read_pickle(f, no_persistent)
            protocol = read_pickle(f, no_persistent)
            sys_info = read_pickle(f, no_persistent)
            if magic != LEGACY_MAGIC or protocol != LEGACY_PROTOCOL or not isinstance(sys_info, dict):
                raise UnpicklingRefused("the legacy header is not torch's")
            if sys_info.get("little_endian", True) is not True:
                raise UnpicklingRefused("big-endian legacy files are not supported")
            start = raw.tell()
            tree = read_pickle(f, persistent)
            if raw.tell() - start > MAX_PICKLE_BYTES:
                raise UnpicklingRefused(f"its data pickle is over {MAX_PICKLE_BYTES:,} bytes")
            keys = read_pickle(f, no_persistent)
        except UnpicklingRefused as exc:
            raise _refused(path, exc) from None
        if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages):
            raise CheckpointError(f"{path}: file is truncated or corrupt (its storage list does not match its data)")
        for key in map(str, keys):
            head = raw.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: file is truncated or corrupt (storage {key!r} is missing)")
            numel = struct.unpack("<q", head)[0]
            ref = storages[key]
            if numel != ref.numel:
                raise CheckpointError(f"{path}: refused: storage {key!r} claims {ref.numel:,} elements but its "
                                      f"data header says {numel:,}")
            offsets[key] = raw.tell()
            if offsets[key] + ref.nbytes > size:
                raise CheckpointError(f"{path}: file is truncated or corrupt (storage {key!r} claims "
                                      f"{ref.nbytes:,} bytes past the end of the file)")
            raw.seek(ref.nbytes, os.SEEK_CUR)
    return tree, LegacySource(path, size, offsets)


# --------------------------------------------------------------------------- safetensors


class FileSource(Source):
    def __init__(self, path: Path, size: int, base: int, spans: Dict[str, Tuple[int, int]]) -> None:
        super().__init__(path, min(MAX_TENSOR_BYTES, size))
        self.base, self.spans = base, spans

    def storage(self, ref: StorageRef) -> torch.Tensor:
        begin, end = self.spans[ref.key]
        self._spend(end - begin)
        out = torch.empty(end - begin, dtype=torch.uint8)
        with open(self.path, "rb") as f:
            f.seek(self.base + begin)
            got = f.readinto(memoryview(out.numpy())) if end > begin else 0
        if got != end - begin:
            raise CheckpointError(f"{self.path}: safetensors file is truncated or corrupt (tensor {ref.key!r})")
        return out


def read_safetensors(path: Path, size: int) -> Tuple[Dict[str, Any], Source, Dict[str, str]]:
    """The tensors of a safetensors file as references, its source, and its string metadata."""
    def corrupt(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: safetensors file is truncated or corrupt ({why})")

    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise corrupt(f"its header is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise corrupt("its header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise corrupt("its __metadata__ is not a map of strings")
    if len(header) > MAX_TENSORS:
        raise CheckpointError(f"{path}: refused: it holds {len(header):,} tensors; a LaMa checkpoint has at most "
                              f"{MAX_TENSORS:,}")
    base = 8 + header_len
    data_size = size - base
    tensors: Dict[str, Any] = {}
    spans: Dict[str, Tuple[int, int]] = {}
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise corrupt(f"tensor {name!r} has a malformed entry")
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
        if dtype is None:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {str(entry['dtype'])[:20]!r}, which LaMa "
                                  "weights never have")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if (not isinstance(shape, list) or len(shape) > MAX_TENSOR_DIMS
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)):
            raise corrupt(f"tensor {name!r} has a malformed shape")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise corrupt(f"tensor {name!r} has malformed data offsets")
        begin, end = offsets
        numel = 1
        for s in shape:
            numel *= s
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        if not 0 <= begin <= end <= data_size or end - begin != nbytes:
            raise corrupt(f"tensor {name!r} of shape {shape} claims bytes {begin}..{end} of {data_size}")
        storage = StorageRef(name, dtype, numel)
        spans[name] = (begin, end)
        stride, step = [], 1
        for s in reversed(shape):
            stride.append(step)
            step *= s
        tensors[name] = TensorRef(storage, 0, tuple(shape), tuple(reversed(stride)))
    return tensors, FileSource(path, size, base, spans), metadata


# --------------------------------------------------------------------------- helpers


def _byteswap(buffer: torch.Tensor, dtype: torch.dtype) -> None:
    """Reverse the byte order of each element of ``dtype`` in a flat uint8 buffer, in place."""
    width = torch.empty((), dtype=dtype).element_size()
    if dtype.is_complex:
        width //= 2
    if width > 1:
        buffer.numpy().view(f"<i{width}").byteswap(inplace=True)


def read_raw(path: Path) -> Tuple[Any, Source, Optional[Dict[str, str]]]:
    """The tree of tensor references of any supported file, its source, and safetensors metadata."""
    size = open_regular(path).st_size
    kind = sniff(path, size)
    if kind == "safetensors":
        tensors, source, metadata = read_safetensors(path, size)
        return tensors, source, metadata
    if kind == "zip":
        tree, source = read_zip(path, size)
    else:
        tree, source = read_legacy(path, size)
    return tree, source, None
