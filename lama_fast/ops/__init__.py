"""The compiled ops of lama_fast (``torch.ops.lama_fast.*``) behind typed Python wrappers.

Importing this package never fails: when the extension ``lama_fast._C`` is
missing, ``lama_fast._build.extension_reasons()`` says why, each ops module's
``*_reasons()`` (``spectral_reasons``, ``winograd_reasons``) answers for its ops,
and the wrappers raise. ``lama_fast.ops.spectral`` and the test-only emulation
ops' fakes (``lama_fast.ops.emulation``) are registered here; other ops modules
are imported by their users. ``docs/ops.md`` maps every op to its code.
"""

from lama_fast.ops import emulation, spectral

__all__ = ["emulation", "spectral"]
