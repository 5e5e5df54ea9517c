"""What setup.py decided about the compiled extension lama_fast._C, and whether it loads."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, Hashable, Iterable

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


def cached_reasons(find: Callable[..., Iterable[str]]) -> Callable[..., list[str]]:
    """``find`` run once per arguments: each call returns a new list of its reasons (empty: available)."""
    once = functools.lru_cache(maxsize=None)(lambda *args: tuple(find(*args)))

    @functools.wraps(find)
    def reasons(*args: Hashable) -> list[str]:
        return list(once(*args))

    return reasons


@cached_reasons
def extension_reasons() -> list[str]:
    """Why lama_fast._C does not import (the import error and the build's reason); empty when it does."""
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
        return [reason]
    return []


@cached_reasons
def ops_reasons(names: tuple[str, ...]) -> list[str]:
    """Why the ops ``torch.ops.lama_fast.<name>`` are not all registered: the extension's reasons,
    or the ops its build left out; empty when they are."""
    reasons = extension_reasons()
    if reasons:
        return reasons
    import torch

    missing = [name for name in names if not hasattr(torch.ops.lama_fast, name)]
    if len(missing) == 1:
        return [f"lama_fast._C was built without the {missing[0]} op"]
    return [f"lama_fast._C was built without the ops {', '.join(missing)}"] if missing else []
