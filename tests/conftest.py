"""Shared fixtures: where the golden vectors made with the original LaMa code lie."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Triton reads TRITON_INTERPRET when it is imported: without a GPU its kernels run in the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# ../shared/golden relative to the repository root, unless LAMA_FAST_GOLDEN points elsewhere.
GOLDEN_DIR = Path(os.environ.get("LAMA_FAST_GOLDEN", Path(__file__).resolve().parents[2] / "shared" / "golden"))


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN_DIR / "tiny" / "checkpoint.ckpt").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the golden checks, but {GOLDEN_DIR} has no tiny/checkpoint.ckpt")
        pytest.skip(f"golden vectors not found under {GOLDEN_DIR} (set LAMA_FAST_GOLDEN)")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def golden_case(golden_dir):
    """Load one of the tiny/*.pt golden files by stem."""

    def load(name: str) -> dict:
        return torch.load(golden_dir / "tiny" / f"{name}.pt", weights_only=True)

    return load
