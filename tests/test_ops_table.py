"""docs/ops.md stays complete: a row per registered op of torch.ops.lama_fast; every file and name it cites exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import lama_fast.ops  # noqa: F401  (loads lama_fast._C, which registers the compiled ops)
from lama_fast._build import extension_reasons
from lama_fast.kernels import triton_reasons

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "docs" / "ops.md"
# `path` or `path::name` in backticks, path relative to the repository root.
CITATION = re.compile(r"`((?:csrc|lama_fast|kernels|tests|bench|docs)/[\w./]+)(?:::([\w.]+))?`")


def _rows() -> dict:
    """op name -> its table row (the cells after the op's)."""
    rows = {}
    for line in TABLE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


def _registered_ops() -> list:
    if not triton_reasons():
        import lama_fast.kernels.spectral  # noqa: F401  (registers the Triton ops)
    return sorted(name.split("::", 1)[1].split(".")[0] for name in torch._C._dispatch_get_all_op_names()
                  if name.startswith("lama_fast::"))


def test_every_registered_op_has_a_row():
    if extension_reasons():
        pytest.skip(f"lama_fast._C is not available: {'; '.join(extension_reasons())}")
    ops = _registered_ops()
    assert "spectral_transform" in ops
    missing = [op for op in ops if op not in _rows()]
    assert not missing, f"docs/ops.md has no row for {missing}"


def test_rows_have_every_column():
    rows = _rows()
    assert {"spectral_transform", "fourier_unit", "conv3x3_winograd", "triton_spectral_transform"} <= set(rows)
    header = next(line for line in TABLE.read_text(encoding="utf-8").splitlines() if line.startswith("| op |"))
    width = header.count("|") - 2
    assert all(len(cells) == width for cells in rows.values()), "a row has more or fewer cells than the header"


def test_every_cited_file_and_name_exists():
    citations = CITATION.findall(TABLE.read_text(encoding="utf-8"))
    assert len(citations) > 20
    for path, name in citations:
        file = ROOT / path
        assert file.exists(), f"docs/ops.md cites {path}, which does not exist"
        if name:
            last = name.split(".")[-1]
            assert re.search(rf"\b{re.escape(last)}\b", file.read_text(encoding="utf-8")), f"{path} has no {name}"
