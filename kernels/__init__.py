"""Triton kernels of lama_fast, installed as ``lama_fast.kernels``.

Triton is optional (``pip install lama_fast[triton]``) and imported lazily:
importing this package never imports triton, so it works without it.

On a machine without a GPU, Triton kernels run only in its interpreter, and
``TRITON_INTERPRET=1`` must be in the environment *before* triton is imported
(and before any module here that defines a ``@triton.jit`` kernel), e.g.
``TRITON_INTERPRET=1 python -m pytest``. The interpreter checks correctness,
not speed, and has no bf16 arithmetic.
"""

from __future__ import annotations

import importlib
import importlib.util

from lama_fast._build import cached_reasons

__all__ = ["triton_reasons"]


@cached_reasons
def triton_reasons() -> list[str]:
    """Why triton cannot be used (not installed, or it fails to import); empty when it imports."""
    if importlib.util.find_spec("triton") is None:
        return ["triton is not installed (pip install lama_fast[triton])"]
    try:
        importlib.import_module("triton")
    except Exception as error:  # a broken or mismatched install fails in many ways
        return [f"triton failed to import ({type(error).__name__}: {error})"]
    return []
