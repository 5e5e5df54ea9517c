"""The model a server runs: loaded once, on a thread of its own, so that the port answers /healthz
("loading") while a large checkpoint is read and prepared."""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple

from PIL import Image


class Model:
    """Holds the Inpainter once ``load()`` has made it; ``error`` says why it could not."""

    def __init__(self, load: Callable[[], Any], on_failure: Optional[Callable[[str], None]] = None) -> None:
        self._load = load
        self._on_failure = on_failure
        self.inpainter: Any = None
        self.error: Optional[str] = None
        self.load_seconds: Optional[float] = None
        self._thread: Optional[threading.Thread] = None

    @classmethod
    def loaded(cls, inpainter: Any) -> "Model":
        model = cls(lambda: inpainter)
        model.inpainter, model.load_seconds = inpainter, 0.0
        return model

    @property
    def ready(self) -> bool:
        return self.inpainter is not None

    def start(self, on_loaded: Optional[Callable[[float], None]] = None) -> None:
        """Load on a new thread unless already loaded; ``on_loaded(seconds)`` when done."""
        if self.ready:
            if on_loaded is not None:
                on_loaded(self.load_seconds or 0.0)
            return
        self._thread = threading.Thread(target=self._run, args=(on_loaded,), name="lama-fast-load", daemon=True)
        self._thread.start()

    def _run(self, on_loaded: Optional[Callable[[float], None]]) -> None:
        start = time.perf_counter()
        try:
            inpainter = self._load()
        except BaseException as exc:  # the server cannot serve without it: say why and stop
            self.error = str(exc) or type(exc).__name__
            if self._on_failure is not None:
                self._on_failure(self.error)
            return
        self.load_seconds = time.perf_counter() - start
        self.inpainter = inpainter
        if on_loaded is not None:
            on_loaded(self.load_seconds)

    def describe(self) -> Dict[str, Any]:
        """Backend, device and the dtype the model computes in, once loaded."""
        if not self.ready:
            return {}
        inpainter = self.inpainter
        compute = getattr(inpainter.generator, "compute_dtype", inpainter.dtype)
        return {"backend": inpainter.backend, "device": str(inpainter.device),
                "dtype": str(compute).replace("torch.", ""), "min_side": inpainter.min_side}


def inpaint(inpainter: Any, image: Image.Image, mask: Image.Image, options: Dict[str, Any],
            refine: bool = False) -> Tuple[Image.Image, List[str], float]:
    """The Inpainter's result (``inpainter.refine``'s with ``refine``), the warnings it gave (e.g. the memory
    guard's switch to crop, refinement's resize to its pixel budget) and its seconds."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = (inpainter.refine if refine else inpainter)(image, mask, **options)
    return result, [str(w.message) for w in caught], time.perf_counter() - start
