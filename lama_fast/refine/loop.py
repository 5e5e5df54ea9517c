"""The refinement loop: the original LaMa's ``refine_predict`` on tensors, for any model that splits in two.

Per scale of the image/mask pyramid (lowest resolution first), the generator's front runs once and
gives the features (z1, z2) at the residual blocks' input; then Adam moves (z1, z2) so that the rear's
prediction matches the known pixels and, scaled down, the previous scale's result.  The weights never
change: only gradients with respect to the features are taken.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple

import torch

from . import pyramid

if TYPE_CHECKING:  # pragma: no cover
    from . import RefineModel

# progress(scale_index, n_scales, iteration, n_iterations, loss): after each forward of the rear.
Progress = Callable[[int, int, int, int, Optional[float]], None]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class RefineSettings:
    """The refinement's settings, with the original's names and its released defaults.

    ``n_iters``: forwards of the rear per scale after the first (n_iters - 1 Adam steps);
    ``lr``: Adam's learning rate; ``min_side``: the pyramid stops when a further level would take the
    short side below about min_side / sqrt(2); ``max_scales``: at most this many scales;
    ``px_budget``: an image of more pixels is resized to about this many first; ``modulo``: each scale
    is padded (torch ``reflect``) to a multiple of it."""

    n_iters: int = 15
    lr: float = 0.002
    min_side: int = 512
    max_scales: int = 3
    px_budget: int = 1_800_000
    modulo: int = 8

    def __post_init__(self) -> None:
        for name in ("n_iters", "min_side", "max_scales", "px_budget", "modulo"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        lr = self.lr
        if not isinstance(lr, numbers.Real) or isinstance(lr, bool) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        object.__setattr__(self, "lr", float(lr))


@dataclass
class RefineResult:
    """What ``refine_tensors`` gives back.

    ``output``: 1×3×h×w in the model's dtype and on its device, the hole pixels from the refined
    prediction and the others the image's (at the size after the px_budget resize, as the original);
    ``hole``: the h×w boolean hole it used; ``input_size``: the (H, W) passed in; ``resized``: whether
    the px_budget resize changed the size; ``scale_sizes``: (h, w) of each scale, lowest first;
    ``losses``: the last loss of each scale (None for the first scale, which is not optimised)."""

    output: torch.Tensor
    hole: torch.Tensor
    input_size: Tuple[int, int]
    resized: bool
    scale_sizes: Tuple[Tuple[int, int], ...]
    losses: Tuple[Optional[float], ...] = field(default=())

    @property
    def size(self) -> Tuple[int, int]:
        """(h, w) of the output."""
        return int(self.output.shape[2]), int(self.output.shape[3])


def plan_sizes(height: int, width: int, settings: RefineSettings) -> Tuple[Optional[Tuple[int, int]],
                                                                          List[Tuple[int, int]]]:
    """For an H×W image: the size of the px_budget resize (None when it is not resized) and the (h, w)
    of each scale, lowest resolution first."""
    resized = pyramid.budget_size(height, width, settings.px_budget)
    h, w = resized if resized is not None else (height, width)
    return resized, pyramid.scale_sizes(h, w, settings.min_side, settings.max_scales)


def check_sizes(height: int, width: int, settings: RefineSettings) -> List[Tuple[int, int]]:
    """The scales' sizes for an H×W image; ValueError when a scale cannot be padded to ``modulo``
    (torch's reflect padding must be smaller than the side)."""
    resized, sizes = plan_sizes(height, width, settings)
    for h, w in sizes:
        # torch's reflect padding must be smaller than the side it pads; an empty side cannot be padded.
        pad_h, pad_w = pyramid.padded_size(h, settings.modulo) - h, pyramid.padded_size(w, settings.modulo) - w
        if min(h, w) < 1 or pad_h >= h or pad_w >= w:
            note = f", resized to {resized[1]}x{resized[0]} for px_budget={settings.px_budget}" if resized else ""
            raise ValueError(
                f"refine cannot pad a scale of {w}x{h} pixels (of the {width}x{height} image{note}) to a multiple "
                f"of modulo={settings.modulo}: reflect padding must be smaller than the side; lower modulo, or "
                f"raise min_side or px_budget"
            )
    return sizes


def _check_inputs(image: torch.Tensor, mask: torch.Tensor) -> None:
    if not torch.is_tensor(image) or not torch.is_tensor(mask):
        raise TypeError("refine_tensors takes torch tensors for image and mask")
    if image.ndim != 4 or image.shape[:2] != (1, 3):
        raise ValueError(f"image must have shape 1x3xHxW, got {tuple(image.shape)}")
    if mask.ndim != 4 or mask.shape[:2] != (1, 1):
        raise ValueError(f"mask must have shape 1x1xHxW, got {tuple(mask.shape)}")
    if image.shape[2:] != mask.shape[2:]:
        raise ValueError(f"image {tuple(image.shape)} and mask {tuple(mask.shape)} differ in size")
    if not image.is_floating_point():
        raise TypeError(f"image must be a floating-point tensor in [0, 1], got {image.dtype}")


def refine_tensors(model: "RefineModel", image: torch.Tensor, mask: torch.Tensor,
                   settings: Optional[RefineSettings] = None, progress: Optional[Progress] = None) -> RefineResult:
    """Refine the inpainting of a 1×3×H×W image in [0, 1] under a 1×1×H×W 0/1 mask (1 = hole).

    Step for step the original ``refine_predict``: the px_budget resize, the pyramid, and per scale
    the front once, then ``n_iters`` forwards of the rear with Adam steps between them.  Everything
    runs in ``model.dtype`` on ``model.device``.  ``progress(scale_index, n_scales, iteration,
    n_iterations, loss)`` is called after each forward; the first scale runs one forward
    (n_iterations 1, loss None).  The model is closed when this returns or raises.

    One deliberate difference: a loss term over no pixels (a hole too small to survive the erosion
    at half resolution, or no known pixel at all) is left out, where the original takes the mean of
    nothing and reports a NaN loss; the gradients, hence the result, are the same."""
    try:
        settings = RefineSettings() if settings is None else settings
        if not isinstance(settings, RefineSettings):
            raise TypeError(f"settings must be a RefineSettings, got {type(settings).__name__}")
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable, got {type(progress).__name__}")
        _check_inputs(image, mask)
        height, width = int(image.shape[2]), int(image.shape[3])
        check_sizes(height, width, settings)
        image = image.detach().to(model.device, model.dtype)
        mask = mask.detach().to(model.device, model.dtype)
        resized = pyramid.budget_size(height, width, settings.px_budget)
        if resized is not None:
            image, mask = pyramid.budget_resize(image, mask, resized)
        images, masks = pyramid.build_pyramid(image, mask, settings.min_side, settings.max_scales)
        n_scales = len(images)
        reference, losses, hole = None, [], None
        with torch.enable_grad():
            for index, (level_image, level_mask) in enumerate(zip(images, masks)):
                h, w = int(level_image.shape[2]), int(level_image.shape[3])
                padded_image = pyramid.pad_to_modulo(level_image, settings.modulo)
                padded_mask = pyramid.threshold(pyramid.pad_to_modulo(level_mask, settings.modulo))
                inpainted, loss = _refine_scale(model, padded_image, padded_mask, reference, (h, w), settings,
                                                progress, index, n_scales)
                reference = inpainted[:, :, :h, :w]
                losses.append(loss)
                hole = padded_mask[0, 0, :h, :w] > 0
        return RefineResult(reference, hole, (height, width), resized is not None,
                            tuple((int(i.shape[2]), int(i.shape[3])) for i in images), tuple(losses))
    finally:
        model.close()


def _refine_scale(model: "RefineModel", image: torch.Tensor, mask: torch.Tensor, reference: Optional[torch.Tensor],
                  size: Tuple[int, int], settings: RefineSettings, progress: Optional[Progress], index: int,
                  n_scales: int) -> Tuple[torch.Tensor, Optional[float]]:
    """One scale of the original's ``_infer``: padded 1×3 image and 1×1 0/1 mask in, the blended
    padded result (detached) and the last loss out (None at the first scale)."""
    with torch.no_grad():
        features = model.front(torch.cat((image * (1 - mask), mask), dim=1))
    if not isinstance(features, (tuple, list)) or len(features) != 2 or not all(torch.is_tensor(z) for z in features):
        raise ValueError("refine needs a generator whose residual blocks take a local and a global part "
                         "(0 < resnet ratio_gin < 1)")
    # The front may hand out views of its work buffers: the optimised features are copies.
    z1, z2 = (z.detach().clone().requires_grad_(True) for z in features)
    if reference is None:
        with torch.no_grad():
            pred = model.rear(z1, z2)
        if progress is not None:
            progress(index, n_scales, 0, 1, None)
        return (mask * pred + (1 - mask) * image).detach(), None

    height, width = size
    known = (mask < pyramid.EPS).expand(-1, 3, -1, -1)
    known_target = image[known]
    # Where the previous scale's result is trusted: the hole halved (sure pixels only), then eroded.
    small = pyramid.pyrdown_mask(mask[:, :1, :height, :width], blur_mask=False, round_up=False)
    sure = (pyramid.erode_mask(small) >= pyramid.EPS).expand(-1, 3, -1, -1)
    sure_target = reference.detach()[sure]
    optimizer = torch.optim.Adam([z1, z2], lr=settings.lr)
    loss_value: Optional[float] = None
    pred = None
    for iteration in range(settings.n_iters):
        last = iteration == settings.n_iters - 1
        optimizer.zero_grad()
        # The last forward gives the result only: no graph is kept for it.
        with torch.set_grad_enabled(not last):
            pred = model.rear(z1, z2)
            terms = []
            if known_target.numel():
                terms.append(torch.mean(torch.abs(pred[known] - known_target)))
            if sure_target.numel():
                down = pyramid.pyrdown(pred[:, :, :height, :width])
                terms.append(torch.mean(torch.abs(down[sure] - sure_target)))
            loss = sum(terms[1:], terms[0]) if terms else None
        loss_value = float(loss.detach()) if loss is not None else 0.0
        if progress is not None:
            progress(index, n_scales, iteration, settings.n_iters, loss_value)
        if not last and loss is not None:
            loss.backward()
            optimizer.step()
        del loss, terms
    return (mask * pred + (1 - mask) * image).detach(), loss_value
