"""``python -m lama_fast.info``: print what lama_fast finds on this machine, as ``lama-fast info`` does.

Importing this module keeps ``lama_fast.info()`` working: the module itself is
callable and returns ``lama_fast._info.info()``.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Dict

from ._info import format_info, info

__all__ = ["format_info", "info"]


class _CallableModule(types.ModuleType):
    """This module, callable as the function ``lama_fast.info`` it stands in for once imported."""

    def __call__(self) -> Dict[str, Any]:
        return info()


if __name__ == "__main__":
    print(format_info(info()))
else:
    sys.modules[__name__].__class__ = _CallableModule
