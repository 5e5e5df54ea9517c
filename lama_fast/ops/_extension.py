"""Loading the compiled extension ``lama_fast._C`` for the ops modules."""

from __future__ import annotations

from lama_fast._build import extension_status


def load_extension() -> str | None:
    """Import ``lama_fast._C``, which registers the ``torch.ops.lama_fast`` ops: None when it loads, else why not."""
    return extension_status()
