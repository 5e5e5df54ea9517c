"""What a ``lama-fast serve`` process is configured with, and the defaults sized for the machine."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Optional

DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_BODY = 200 * 1024 * 1024
# How long a client may take to send its request body once it has a place in the queue.
BODY_READ_TIMEOUT_S = 120.0
JPEG_QUALITY = 95
# The most pixels a refinement request may refine at (larger images are resized to it first), and the
# budget of requests that do not give one: refinement's own default (lama_fast.refine.RefineSettings).
DEFAULT_REFINE_PX_BUDGET = 1_800_000


def default_max_queue(max_body: int, max_pixels: int, available: Optional[int] = None) -> int:
    """How many requests may wait behind the one running: two per core, at least 2, at most 32, and no
    more than the free memory holds at the worst case (a full body and a decoded image, mask and
    result of ``max_pixels`` each)."""
    by_cores = 2 * (os.cpu_count() or 1)
    if available is None:
        from ..memory import available_bytes

        available = available_bytes()
    if available is None:
        return max(2, min(32, by_cores))
    per_request = max_body + max_pixels * (4 + 1 + 4 + 12)  # RGBA in and out, mask, the float copy
    return max(2, min(32, by_cores, available // (2 * per_request)))


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach: 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


@dataclass(frozen=True)
class ServeSettings:
    """The limits and the key of a server (the model's settings are the Inpainter's).

    ``refine``: whether requests may ask for refinement; ``refine_px_budget``: the pixel budget of a
    refinement request that does not give one, and the most one may give."""

    max_queue: int
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_body: int = DEFAULT_MAX_BODY
    api_key: Optional[str] = None
    jpeg_quality: int = JPEG_QUALITY
    body_timeout: float = BODY_READ_TIMEOUT_S
    refine: bool = True
    refine_px_budget: int = DEFAULT_REFINE_PX_BUDGET

    def __post_init__(self) -> None:
        for name in ("max_queue", "max_pixels", "max_body", "refine_px_budget"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "max_queue" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'max_queue' else 'positive'} "
                                 f"integer, got {value!r}")
        if not isinstance(self.refine, bool):
            raise ValueError(f"refine must be True or False, got {self.refine!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("the API key is empty")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")
