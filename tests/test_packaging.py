"""Optional parts never break `import lama_fast`, and each says why it is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lama_fast
import lama_fast.kernels
from lama_fast import _build


def test_kernels_package_is_installed_under_lama_fast():
    assert lama_fast.kernels.__name__ == "lama_fast.kernels"
    assert Path(lama_fast.kernels.__file__).parent.name == "kernels"


def test_build_info_names_every_part():
    info = _build.build_info()
    assert set(_build.EXTENSION_KEYS) <= set(info)
    assert all(info[key].startswith(("built", "not built", "unknown")) for key in _build.EXTENSION_KEYS)


def test_missing_optional_parts_do_not_break_import():
    # A fresh interpreter in which neither the extension nor triton can be imported.
    script = (
        "import sys\n"
        "sys.modules['lama_fast._C'] = None\n"
        "sys.modules['triton'] = None\n"
        "import lama_fast, lama_fast.kernels\n"
        "from lama_fast._build import extension_status\n"
        "print(extension_status())\n"
        "print(lama_fast.kernels.triton_status())\n"
        "print(lama_fast.available_backends()['reference'])\n"
        "print(lama_fast.available_backends()['cpu'])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    extension, triton, reference, cpu = done.stdout.splitlines()
    assert extension.startswith("lama_fast._C does not import (ModuleNotFoundError")
    assert "build: " in extension
    assert triton.startswith("triton ")
    assert reference == "None"
    assert cpu.startswith("lama_fast._C does not import (ModuleNotFoundError")
