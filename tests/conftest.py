"""Shared fixtures: the golden vectors made with the original LaMa code (tests/golden, read-only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Triton reads TRITON_INTERPRET when it is imported: without a GPU its kernels run in the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN_DIR / "tiny" / "checkpoint.ckpt").is_file():
        pytest.fail(f"{GOLDEN_DIR} has no tiny/checkpoint.ckpt: the golden vectors belong to the repository")
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def golden_case(golden_dir):
    """Load one of the tiny/*.pt golden files by stem."""

    def load(name: str) -> dict:
        return torch.load(golden_dir / "tiny" / f"{name}.pt", weights_only=True)

    return load


@pytest.fixture(scope="session")
def refine_case(golden_dir):
    """The golden refinement case (the original refine_predict in float64)."""
    return torch.load(golden_dir / "refine" / "refine_case.pt", weights_only=True)


@pytest.fixture
def ieee_float32():
    """float32 convolutions and matmuls without TF32 on a GPU (cuDNN, cuBLAS), restored afterwards."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            yield
    finally:
        torch.set_float32_matmul_precision(before)
