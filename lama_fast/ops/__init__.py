"""Compiled CPU ops of lama_fast (``torch.ops.lama_fast.*``) behind typed Python wrappers.

Importing this package never fails: when the extension ``lama_fast._C`` is
missing, each ops module says why in its ``EXTENSION_ERROR`` and its wrappers
raise. ``lama_fast.ops.spectral`` is imported here; other ops modules are
imported by their users.
"""

from lama_fast.ops import spectral
from lama_fast.ops._extension import load_extension

__all__ = ["load_extension", "spectral"]
