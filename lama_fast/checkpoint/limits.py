"""The error type of checkpoint loading and the budgets every reader enforces before it allocates.

A checkpoint may come from anywhere (a service reads what users upload), so each reader
checks what a file claims (record sizes, tensor counts, pickled containers, config values)
against these bounds first, and only then reads or builds anything.
"""

from __future__ import annotations

# The released big-lama generator: 50,975,875 parameters, 204 MB in float32.
BIG_LAMA_BYTES = 50_975_875 * 4
# Tensor data a checkpoint may make us read: 10x big-lama's generator in float32
# (room for the training entries of a Lightning file, or a float64 copy).
MAX_TENSOR_BYTES = 10 * BIG_LAMA_BYTES
# Tensors a file may declare (big-lama's Lightning file holds a few thousand).
MAX_TENSORS = 20_000
# Records a zip archive may list (one per tensor storage, plus a few).
MAX_ZIP_RECORDS = MAX_TENSORS + 1_000
# Size of one pickle (a Lightning file's data.pkl is well under 1 MiB).
MAX_PICKLE_BYTES = 16 * 2**20
# Objects, memo entries and container items one pickle may create.
MAX_PICKLE_ITEMS = 1_000_000
# A safetensors JSON header (big-lama's is about 100 KB).
MAX_SAFETENSORS_HEADER = 8 * 2**20
# The generator config stored in a safetensors file's metadata.
MAX_CONFIG_BYTES = 64 * 2**10
# Dimensions of one tensor.
MAX_TENSOR_DIMS = 8


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the generator."""


class CheckpointNotFoundError(FileNotFoundError, CheckpointError):
    """A checkpoint path that does not exist (catchable as either base class)."""


NOT_A_CHECKPOINT = "is not a PyTorch, TorchScript or safetensors checkpoint"
