"""Dataset-scale inpainting on Ray Data: the folder run of ``lama-fast inpaint``, spread over a cluster.

    from lama_fast.distributed import folder_items, inpaint_dataset
    items, plan = folder_items("photos", "cleaned")            # paired as lama-fast inpaint pairs a folder
    summary = inpaint_dataset(items, "big-lama.pt", address="local", results="cleaned/results.jsonl")
    print(summary.line())

Needs the ``distributed`` extra (``ray[data]``, ``pyarrow``); ``import lama_fast`` never imports this.

- :mod:`.items`    the work: from a local folder, or a CSV/JSONL/Parquet manifest of paths or URIs
- :mod:`.storage`  reading and writing through pyarrow's filesystems (local, s3://, ...), outputs whole
- :mod:`.worker`   the actor: loads the model once, then reads, inpaints and writes item after item
- :mod:`.run`      the Ray Data pipeline, the pool's size, the summary and the results manifest
"""

from .items import Item, folder_items, is_manifest, manifest_items
from .run import RESULTS_NAME, DatasetSummary, inpaint_dataset, ray_reasons

__all__ = ["Item", "DatasetSummary", "RESULTS_NAME", "folder_items", "inpaint_dataset", "is_manifest",
           "manifest_items", "ray_reasons"]
