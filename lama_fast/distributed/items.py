"""The work of a dataset run: one item per output, from a folder (paired as ``lama-fast inpaint`` pairs
it) or from a manifest (CSV, JSONL or Parquet with ``image``, ``mask`` and optional ``output`` columns)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from ..pairing import OUTPUT_FORMATS, FolderPlan, output_suffix, plan_folder
from . import storage

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Item:
    """One output to make: ``image`` under ``mask`` into ``output`` (paths or URIs); ``name`` names it."""

    name: str
    image: str
    mask: str
    output: str


def folder_items(input_dir: str, output_dir: str, mask_dir: Optional[str] = None,
                 output_format: str = "png") -> Tuple[List[Item], FolderPlan]:
    """The items of a local folder run, and its plan (pairing failures, images without a mask)."""
    plan = plan_folder(input_dir, output_dir, mask_dir, output_format)
    root = Path(output_dir)
    items = [Item(str(PurePosixPath(*job.output.relative_to(root).parts)), str(job.image), str(job.mask),
                  str(job.output)) for job in plan.jobs]
    return items, plan


def is_manifest(location: str) -> bool:
    return storage.suffix(location) in MANIFEST_SUFFIXES


def read_manifest(location: str) -> List[Dict[str, Optional[str]]]:
    """The rows of a manifest as dicts of its ``image``, ``mask`` and ``output`` columns."""
    import pyarrow as pa

    data = storage.read_bytes(location)
    kind = storage.suffix(location)
    try:
        if kind == ".csv":
            from pyarrow import csv

            table = csv.read_csv(pa.BufferReader(data))
        elif kind == ".parquet":
            from pyarrow import parquet

            table = parquet.read_table(io.BytesIO(data))
        else:
            from pyarrow import json

            table = json.read_json(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as error:
        raise ValueError(f"cannot read the manifest {location}: {error}") from None
    missing = [column for column in ("image", "mask") if column not in table.column_names]
    if missing:
        raise ValueError(f"the manifest {location} has no {' and no '.join(missing)} column "
                         f"(its columns: {', '.join(table.column_names)})")
    columns = [c for c in ("image", "mask", "output") if c in table.column_names]
    return table.select(columns).to_pylist()


def manifest_items(location: str, output_dir: Optional[str] = None, output_format: str = "png") -> List[Item]:
    """The items of a manifest. Relative paths in it are taken from the manifest's folder; a row without
    an output is written under ``output_dir`` by its image's name. Raises ValueError for empty cells,
    an output that is an input, or two rows with one output."""
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {', '.join(OUTPUT_FORMATS)}, got {output_format!r}")
    base = _folder_of(location)
    items: List[Item] = []
    for number, row in enumerate(read_manifest(location), start=2 if storage.suffix(location) == ".csv" else 1):
        image, mask, output = (row.get(key) for key in ("image", "mask", "output"))
        if not image or not mask:
            raise ValueError(f"the manifest {location}, row {number}: image and mask must both be given")
        image, mask = _located(base, str(image)), _located(base, str(mask))
        if output:
            output = _located(base, str(output))
        elif output_dir is not None:
            name = PurePosixPath(storage.path_part(image)).name
            output = storage.join(output_dir, PurePosixPath(name).stem + output_suffix(Path(name), output_format))
        else:
            raise ValueError(f"the manifest {location}, row {number}: no output column value and no output "
                             f"folder (-o) to name one in")
        name = storage.path_part(output).lstrip("/") if storage.is_uri(output) else output
        items.append(Item(name, image, mask, output))
    _check_outputs(location, items)
    return items


def _check_outputs(location: str, items: Sequence[Item]) -> None:
    inputs = {key for item in items for key in (item.image, item.mask)}
    seen: Dict[str, Item] = {}
    for item in items:
        if item.output in inputs:
            raise ValueError(f"the manifest {location}: the output {item.output} is also an input; "
                             f"refusing to overwrite it")
        if item.output in seen:
            raise ValueError(f"the manifest {location}: {seen[item.output].image} and {item.image} would both "
                             f"be written to {item.output}")
        seen[item.output] = item


def _folder_of(location: str) -> str:
    if storage.is_uri(location) and not storage.is_local(location):
        parts = urlsplit(location)
        return parts._replace(path=parts.path.rsplit("/", 1)[0]).geturl()  # the query (options) kept
    return str(storage.local_path(location).absolute().parent)


def _located(base: str, location: str) -> str:
    """A manifest's path, relative ones taken from the manifest's folder."""
    if storage.is_uri(location):
        return location
    if Path(location).is_absolute():
        return location
    return storage.join(base, location)
