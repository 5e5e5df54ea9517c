"""Reading and writing the items' files wherever they are: local paths, or any URI pyarrow's filesystem
layer takes (``s3://bucket/key``, ``gs://``, ``hdfs://``, ``file://``...).

A local output is written to a temporary file beside it and renamed into place (``lama_fast._io``);
an object store's object appears only when its upload completes, so it is written under its final name.
Either way an output exists only whole.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Dict, Tuple
from urllib.parse import urlsplit

from .._io import atomic_write_bytes

# Largest input file read into memory (an image or a mask); larger ones fail as their item.
MAX_INPUT_BYTES = 1 << 30
_filesystems: Dict[str, object] = {}
# Object stores whose paths are "bucket/key".
_BUCKET_SCHEMES = ("s3", "gs", "gcs")
_lock = threading.Lock()


def is_uri(location: str) -> bool:
    """True for ``scheme://...`` (a Windows drive letter is no scheme)."""
    scheme = urlsplit(str(location)).scheme
    return len(scheme) > 1


def is_local(location: str) -> bool:
    return not is_uri(location) or urlsplit(str(location)).scheme == "file"


def local_path(location: str) -> Path:
    """The local path of a plain path or a ``file://`` URI."""
    location = str(location)
    return Path(urlsplit(location).path) if is_uri(location) else Path(location)


def resolve(location: str) -> Tuple[object, str]:
    """The pyarrow filesystem of ``location`` (cached per scheme, host and options) and the path in it."""
    from pyarrow import fs

    if is_local(location):
        return fs.LocalFileSystem(), str(local_path(location).absolute())
    parts = urlsplit(str(location))
    key = f"{parts.scheme}://{parts.netloc}?{parts.query}"
    with _lock:
        cached = _filesystems.get(key)
    if cached is None or parts.scheme not in _BUCKET_SCHEMES:
        cached, path = fs.FileSystem.from_uri(str(location))
        with _lock:
            _filesystems[key] = cached
        return cached, path
    return cached, parts.netloc + parts.path  # what from_uri makes of it, without a new client


def join(folder: str, name: str) -> str:
    """``name`` (a relative POSIX path) under ``folder``, a path or a URI (its query kept at the end)."""
    if not is_uri(folder):
        return str(Path(folder) / name)
    parts = urlsplit(folder)
    path = parts.path.rstrip("/") + "/" + name
    return parts._replace(path=path).geturl()


def exists(location: str) -> bool:
    from pyarrow import fs

    filesystem, path = resolve(location)
    return filesystem.get_file_info(path).type == fs.FileType.File


def read_bytes(location: str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """A file's bytes; FileNotFoundError or ValueError (over ``limit``, not a file) naming it."""
    from pyarrow import fs

    filesystem, path = resolve(location)
    info = filesystem.get_file_info(path)
    if info.type == fs.FileType.NotFound:
        raise FileNotFoundError(f"{location} does not exist")
    if info.type != fs.FileType.File:
        raise ValueError(f"{location} is not a file")
    if info.size is not None and info.size > limit:
        raise ValueError(f"{location} is {info.size} bytes; the limit is {limit}")
    with filesystem.open_input_stream(path) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{location} is over {limit} bytes")
    return data


def write_whole(location: str, data: bytes) -> None:
    """Write ``data`` so that ``location`` never holds part of it."""
    if is_local(location):
        path = local_path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        return
    filesystem, path = resolve(location)
    parent = path.rsplit("/", 1)[0]
    if parent and urlsplit(str(location)).scheme not in _BUCKET_SCHEMES:  # object stores have no folders
        filesystem.create_dir(parent, recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)


def path_part(location: str) -> str:
    """The path of a URI (without scheme, host and query), or a plain path as it is."""
    return urlsplit(str(location)).path if is_uri(location) else str(location)


def suffix(location: str) -> str:
    """The lower-case extension of a path or URI (``.png``), from its path part."""
    return os.path.splitext(path_part(location))[1].lower()
