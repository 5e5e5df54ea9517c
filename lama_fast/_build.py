"""What setup.py decided about the compiled extension lama_fast._C, and whether it loads."""

from __future__ import annotations

import functools
import json
from pathlib import Path

BUILD_INFO_PATH = Path(__file__).with_name("_build_info.json")
EXTENSION_KEYS = ("cpu_extension", "cuda_extension")


def build_info() -> dict[str, str]:
    """The build decisions recorded by setup.py, each part mapped to "built: ..." or "not built: <reason>"."""
    try:
        recorded = json.loads(BUILD_INFO_PATH.read_text(encoding="utf-8"))
    except FileNotFoundError:
        reason = f"unknown: lama_fast was not installed with setup.py (no {BUILD_INFO_PATH.name})"
        return {key: reason for key in EXTENSION_KEYS}
    except (OSError, ValueError) as error:
        reason = f"unknown: {BUILD_INFO_PATH.name} is unreadable ({type(error).__name__}: {error})"
        return {key: reason for key in EXTENSION_KEYS}
    if not isinstance(recorded, dict):
        recorded = {}
    info = {str(key): str(value) for key, value in recorded.items()}
    for key in EXTENSION_KEYS:
        info.setdefault(key, f"unknown: {BUILD_INFO_PATH.name} does not say")
    return info


@functools.lru_cache(maxsize=None)
def extension_status() -> str | None:
    """None when lama_fast._C imports, else why not (the import error and the build's reason)."""
    try:
        from lama_fast import _C  # noqa: F401  (importing registers the ops)
    except Exception as error:  # ImportError, or OSError/RuntimeError from a mismatched build
        info = build_info()
        reason = f"lama_fast._C does not import ({type(error).__name__}: {error}); build: {info['cpu_extension']}"
        built_for = info.get("torch_version")
        if built_for and info["cpu_extension"].startswith("built"):
            import torch

            if built_for != torch.__version__:
                reason += f"; it was built for torch {built_for}, this is torch {torch.__version__}: rebuild it"
        return reason
    return None
