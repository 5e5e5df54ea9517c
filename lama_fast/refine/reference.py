"""The refinement's model on the reference backend: the generator's own layers, split in two, eager autograd.

Works on lama_fast's reference generator and on one built by the original ``saicinpainting`` code:
both keep their layers in ``generator.model`` (an ``nn.Sequential``), the residual blocks in a row.
The front is every layer before the first residual block, the rear the first block and all after it.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

# Residual blocks of the original code (FFC and pix2pixHD) and of lama_fast, by class name.
RESIDUAL_BLOCK_NAMES = ("FFCResnetBlock", "ResnetBlock")


def is_residual_block(layer: nn.Module) -> bool:
    """Whether a layer of ``generator.model`` is a residual block (by class name, or by its
    ``conv1`` and ``conv2`` halves)."""
    return type(layer).__name__ in RESIDUAL_BLOCK_NAMES or (hasattr(layer, "conv1") and hasattr(layer, "conv2"))


def first_residual_block(layers: nn.Sequential) -> int:
    """The index of the first residual block among the generator's layers; ValueError without one."""
    for index, layer in enumerate(layers):
        if is_residual_block(layer):
            return index
    raise ValueError("refine needs a generator with residual blocks in generator.model; this one has none")


def unwrap(module: nn.Module) -> nn.Module:
    """The generator inside wrappers that keep it as ``.module`` (CUDA graphs, DataParallel)."""
    for _ in range(8):
        inner = getattr(module, "module", None)
        if isinstance(getattr(module, "model", None), nn.Sequential) or not isinstance(inner, nn.Module):
            break
        module = inner
    return module


class ReferenceRefineModel:
    """A LaMa generator as the refinement's front and rear (see ``lama_fast.refine.RefineModel``).

    While it is open the generator is in eval mode and its parameters do not require gradients, so
    only the features get them; ``close()`` gives the module back as it was (modes and
    ``requires_grad`` flags).  Any dtype the generator is in, float64 included."""

    def __init__(self, generator: nn.Module) -> None:
        generator = unwrap(generator)
        layers = getattr(generator, "model", None)
        if not isinstance(layers, nn.Sequential):
            raise ValueError(f"refine on the reference backend needs a LaMa generator with a 'model' Sequential; "
                             f"got {type(generator).__name__}")
        first = first_residual_block(layers)
        self.generator = generator
        self.front_layers = layers[:first]
        self.rear_layers = layers[first:]
        tensor = next(iter(list(generator.parameters()) + list(generator.buffers())), None)
        self.device = tensor.device if tensor is not None else torch.device("cpu")
        self.dtype = tensor.dtype if tensor is not None else torch.float32
        self._saved: Optional[Tuple[List[Tuple[nn.Parameter, bool]], List[Tuple[nn.Module, bool]]]] = None
        self._freeze()

    def _freeze(self) -> None:
        """Eval mode and no parameter gradients, remembering what the module had."""
        if self._saved is not None:
            return
        parameters = [(p, p.requires_grad) for p in self.generator.parameters()]
        modes = [(m, m.training) for m in self.generator.modules()]
        self._saved = (parameters, modes)
        for parameter, _ in parameters:
            parameter.requires_grad_(False)
        self.generator.eval()

    def front(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The layers before the first residual block: the 4-channel input to (local, global) features."""
        self._freeze()
        return tuple(self.front_layers(x))

    def rear(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The residual blocks and the decoder: (local, global) features to the N×3×H×W prediction."""
        self._freeze()
        return self.rear_layers((z1, z2))

    def close(self) -> None:
        """Give the generator back its modes and ``requires_grad`` flags."""
        if self._saved is None:
            return
        parameters, modes = self._saved
        self._saved = None
        for parameter, flag in parameters:
            parameter.requires_grad_(flag)
        for module, training in modes:
            module.training = training
