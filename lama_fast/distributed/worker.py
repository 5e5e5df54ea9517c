"""What runs on the cluster: an actor that loads and prepares the model once, then does items one by one.

Ray Data gives each actor batches of items (one item each: a lost actor then costs one item, which Ray
retries on another actor). An item is read, inpainted and written whole; one that fails is answered
with its error, and the run goes on.
"""

from __future__ import annotations

import io
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from . import storage
from .items import Item

RESULT_COLUMNS = ("name", "image", "mask", "output", "status", "seconds", "error", "worker")


def _checkpoint_file(checkpoint: str) -> str:
    """A local path of the checkpoint: as given, or a copy of a remote one in a temporary folder."""
    if storage.is_local(checkpoint):
        return str(storage.local_path(checkpoint))
    folder = tempfile.mkdtemp(prefix="lama-fast-checkpoint-")
    path = os.path.join(folder, os.path.basename(checkpoint.split("?", 1)[0]) or "checkpoint")
    Path(path).write_bytes(storage.read_bytes(checkpoint, limit=8 << 30))
    return path


class InpaintWorker:
    """A Ray Data callable class: ``__init__`` loads the model, ``__call__`` does a batch of items."""

    def __init__(self, checkpoint: str, device: str = "cpu", backend: str = "auto", dtype: str = "float32",
                 options: Optional[Dict[str, Any]] = None, jpeg_quality: int = 95,
                 png_compress_level: Optional[int] = None, threads: Optional[int] = None,
                 overwrite: bool = False) -> None:
        import torch

        import lama_fast
        from ..batch import SaveOptions

        if threads:
            torch.set_num_threads(threads)
        self.inpainter = lama_fast.load(_checkpoint_file(checkpoint), device=device, backend=backend,
                                        dtype=getattr(torch, dtype))
        self.options = dict(options or {})
        self.save = SaveOptions(jpeg_quality=jpeg_quality, png_compress_level=png_compress_level)
        self.overwrite = overwrite
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: Dict[str, np.ndarray]) -> Dict[str, List[Any]]:
        rows = [self.run(Item(*(str(batch[key][i]) for key in ("name", "image", "mask", "output"))))
                for i in range(len(batch["name"]))]
        return {column: [row[column] for row in rows] for column in RESULT_COLUMNS}

    def run(self, item: Item) -> Dict[str, Any]:
        """Do one item; its result row (status ``done``, ``skipped`` or ``failed``, with the error)."""
        start = time.perf_counter()
        status, error = "done", ""
        try:
            if not self.overwrite and storage.exists(item.output):
                status = "skipped"  # written meanwhile: by another run, or by this item's earlier, lost attempt
            else:
                storage.write_whole(item.output, self.inpaint(item))
        except Exception as exc:  # an item that fails is reported; the others go on
            status, error = "failed", str(exc) or type(exc).__name__
        return {"name": item.name, "image": item.image, "mask": item.mask, "output": item.output,
                "status": status, "seconds": round(time.perf_counter() - start, 4), "error": error,
                "worker": self.worker}

    def inpaint(self, item: Item) -> bytes:
        """The encoded output of one item, made as the folder run makes it."""
        from ..batch import encoding, inpaint_images, pair_images
        from ..images import open_image

        image = open_image(io.BytesIO(storage.read_bytes(item.image)), item.image, "image")
        mask = open_image(io.BytesIO(storage.read_bytes(item.mask)), item.mask, "mask")
        image, mask = pair_images(image, mask, item.image, item.mask)
        notes: List[str] = []
        result = inpaint_images(self.inpainter, item.image, image, mask, self.options, notes.append)
        encoded, fmt, params = encoding(result, Path(storage.path_part(item.output)), self.save,
                                        image.info.get("icc_profile"))
        out = io.BytesIO()
        encoded.save(out, format=fmt, **params)
        return out.getvalue()
