"""Optional parts never break `import lama_fast`, and each says why it is missing."""

from __future__ import annotations

import re
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
        "import torch\n"
        "import lama_fast, lama_fast.kernels\n"
        "from lama_fast._build import extension_reasons\n"
        "from lama_fast.backends.cuda import cuda_kernels_reasons\n"
        "from lama_fast.ops import spectral, winograd\n"
        "print(*extension_reasons(), sep='; ')\n"
        "print(*lama_fast.kernels.triton_reasons(), sep='; ')\n"
        "print(lama_fast.available_backends()['reference'])\n"
        "print(lama_fast.available_backends()['cpu'])\n"
        "why = extension_reasons()\n"
        "print(spectral.spectral_reasons() == winograd.winograd_reasons() == cuda_kernels_reasons() == why)\n"
        "x = torch.zeros(1, 2, 4, 4)\n"
        "for call in (lambda: spectral.fourier_unit(x, x, x), winograd.winograd_isa):\n"
        "    try:\n"
        "        call()\n"
        "    except RuntimeError as error:\n"
        "        print(error)\n"
        "print(lama_fast._info.format_info(lama_fast.info()))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    extension, triton, reference, cpu, same, spectral, winograd, *info = done.stdout.splitlines()
    assert extension.startswith("lama_fast._C does not import (ModuleNotFoundError")
    assert "build: " in extension
    assert triton.startswith("triton ")
    assert reference == "None"
    assert cpu.startswith("lama_fast._C does not import (ModuleNotFoundError")
    # Every part that needs the extension gives its reason; the ops wrappers raise with it.
    assert same == "True"
    assert spectral == f"the compiled op is unavailable: {extension}"
    assert winograd == f"the Winograd convolution is unavailable: {extension}"
    # lama_fast.info() still works, without the Winograd row.
    assert f"| extension lama_fast._C | {extension}" in "\n".join(info)
    assert not any("winograd" in line for line in info)
    assert any(re.match(r"\| triton kernels +\| triton ", line) for line in info)


def test_serve_needs_its_extra_and_nothing_else_does(golden_dir):
    # A fresh interpreter without the serve extra: lama_fast and its command line work, serve says what to install.
    script = (
        "import sys\n"
        "for name in ('fastapi', 'uvicorn', 'starlette', 'multipart', 'prometheus_client'):\n"
        "    sys.modules[name] = None\n"
        "import lama_fast, lama_fast.cli, lama_fast.serve\n"
        "from lama_fast.cli import main\n"
        f"code = main(['serve', '--checkpoint', {str(golden_dir / 'tiny' / 'checkpoint.ckpt')!r}])\n"
        "print(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2\n"
    assert done.stderr == ("lama-fast serve: lama-fast serve needs the serve extra (fastapi, uvicorn, multipart, "
                           "prometheus_client not installed): pip install 'lama_fast[serve]'\n")
