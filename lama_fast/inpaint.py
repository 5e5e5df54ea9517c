"""Pre- and post-processing around the generator, as the original ``bin/predict.py`` does it.

1. image uint8 -> [0, 1]; mask -> (mask > 0)
2. pad bottom/right to a multiple of 8 with numpy's ``symmetric`` mode
3. generator input = cat(image * (1 - mask), mask)
4. result = mask * output + (1 - mask) * image, cropped back
5. x 255, clip to [0, 255], truncate to uint8

Around it: input forms (lama_fast.images), the high-resolution strategies
(lama_fast.hd) and the memory guard (lama_fast.memory).  Pixels outside the hole
are always the input's, bit for bit.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import hd, memory
from .images import prepare_image, prepare_mask
from .refine import RefineSettings, check_backend, check_sizes, plan_sizes, refine_model, refine_tensors, resize_input

PAD_MODULO = 8


def _symmetric_index(size: int, padded: int, device: torch.device) -> torch.Tensor:
    """Indices that extend ``range(size)`` to ``padded`` entries like numpy's 'symmetric' pad (abc|cba|abc...)."""
    idx = torch.arange(padded, device=device) % (2 * size)
    return torch.where(idx >= size, 2 * size - 1 - idx, idx)


def pad_to_modulo(x: torch.Tensor, modulo: int = PAD_MODULO) -> torch.Tensor:
    """Pad the last two dims at the bottom and right to a multiple of ``modulo`` (symmetric mode)."""
    height, width = x.shape[-2:]
    padded_h = -(-height // modulo) * modulo
    padded_w = -(-width // modulo) * modulo
    if (padded_h, padded_w) == (height, width):
        return x
    rows = _symmetric_index(height, padded_h, x.device)
    cols = _symmetric_index(width, padded_w, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


class Inpainter:
    """Image + mask in, inpainted image out, around a generator chosen by a backend.

    ``hd_strategy``, ``crop_margin``, ``crop_trigger_size`` and ``resize_limit`` set the
    defaults of every call (see :mod:`lama_fast.hd`); ``max_memory`` (bytes or a string
    such as ``"4G"``) caps the estimated memory of a run (default: what the machine has free).

    Images need at least ``min_side`` pixels on each side (9 for big-lama); smaller ones raise
    ``ValueError("image is 8x8 pixels; this model needs at least 9 pixels on each side")``
    (``images are ...`` from ``inpaint_batch``), whatever the mask and strategy.
    """

    def __init__(
        self,
        generator: nn.Module,
        backend: str = "reference",
        backend_reasons: Optional[Dict[str, Optional[str]]] = None,
        hd_strategy: str = hd.DEFAULT_STRATEGY,
        crop_margin: int = hd.DEFAULT_CROP_MARGIN,
        crop_trigger_size: int = hd.DEFAULT_CROP_TRIGGER_SIZE,
        resize_limit: int = hd.DEFAULT_RESIZE_LIMIT,
        max_memory: Optional[Union[int, str]] = None,
    ) -> None:
        self.generator = generator
        self.backend = backend
        # Why each other backend was not taken (None for the one that was).
        self.backend_reasons: Dict[str, Optional[str]] = dict(backend_reasons or {backend: None})
        # A fast generator may hold no parameters, only a buffer placed like its inputs.
        first = next(itertools.chain(generator.parameters(), generator.buffers()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        self.dtype = first.dtype if first is not None else torch.float32
        self.hd, self.max_memory = self.check_settings(hd_strategy, crop_margin, crop_trigger_size, resize_limit,
                                                       max_memory)

    @staticmethod
    def check_settings(
        hd_strategy: str = hd.DEFAULT_STRATEGY,
        crop_margin: int = hd.DEFAULT_CROP_MARGIN,
        crop_trigger_size: int = hd.DEFAULT_CROP_TRIGGER_SIZE,
        resize_limit: int = hd.DEFAULT_RESIZE_LIMIT,
        max_memory: Optional[Union[int, str]] = None,
    ) -> Tuple[hd.HDSettings, Optional[int]]:
        """An Inpainter's settings, checked: the high-resolution settings and ``max_memory`` in bytes
        (None: what the machine has free); raises as the Inpainter would."""
        settings = hd.HDSettings(hd_strategy, crop_margin, crop_trigger_size, resize_limit)
        return settings, memory.parse_size(max_memory) if max_memory is not None else None

    def __repr__(self) -> str:
        return (f"Inpainter(backend={self.backend!r}, device={str(self.device)!r}, dtype={self.dtype}, "
                f"hd_strategy={self.hd.strategy!r})")

    # The released models downsample three times: a generator that does not show its depth is taken as one.
    DEFAULT_DOWNSAMPLING = 3

    @property
    def min_side(self) -> int:
        """The fewest pixels an image may have on each side for this generator (9 for big-lama)."""
        # Checked for every crop box; a generator without a config is walked once, not per box.
        cached = getattr(self, "_min_side_of", None)
        if cached is None or cached[0] is not self.generator:
            cached = self._min_side_of = (self.generator, self._min_side_for(self._downsamplings()))
        return cached[1]

    def _downsamplings(self) -> int:
        """How many times the generator halves its input: its config's ``n_downsampling`` (reference and fast
        modules), else its count of stride-2 upsampling layers, else DEFAULT_DOWNSAMPLING."""
        module = self.generator
        for _ in range(8):  # through wrappers that keep the model as ``.module`` (CudaGraphed, DataParallel)
            config = getattr(module, "config", None)
            depth = config.get("n_downsampling") if isinstance(config, dict) else None
            if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0:
                return depth
            inner = getattr(module, "module", None)
            if not isinstance(inner, nn.Module) or inner is module:
                break
            module = inner
        # The original code's generator has no config; its decoder mirrors the encoder, one stride-2
        # transposed convolution per downsampling, among its modules or inside a fast module's stages.
        ups = sum(1 for m in module.modules() if isinstance(m, nn.ConvTranspose2d) and tuple(m.stride) == (2, 2))
        stages = getattr(module, "stages", None)
        if not ups and isinstance(stages, (list, tuple)):
            ups = self._stage_upsamplings(stages)
        return ups or self.DEFAULT_DOWNSAMPLING

    @staticmethod
    def _stage_upsamplings(stages: Any) -> int:
        """Stride-2 transposed convolutions among a fast generator's stages, however they are nested."""
        count, seen, todo = 0, set(), list(stages)
        while todo:
            item = todo.pop()
            if id(item) in seen or torch.is_tensor(item):
                continue
            seen.add(id(item))
            if "ConvTranspose" in type(item).__name__:
                count += tuple(getattr(item, "stride", ())) == (2, 2)
            elif isinstance(item, (list, tuple)):
                todo.extend(item)
            elif type(item).__module__.startswith("lama_fast.") and isinstance(getattr(item, "__dict__", None), dict):
                todo.extend(vars(item).values())
        return count

    @staticmethod
    def _min_side_for(downsamplings: int) -> int:
        """The smallest image side whose padded input every layer of a generator with this many
        downsamplings can take."""
        # pad_to_modulo makes the input a multiple of PAD_MODULO (so the first 7x7 conv's reflect pad of 3
        # always has the 4 pixels it needs); each stride-2 conv halves it, and the residual blocks' 3x3
        # reflect-padded convs at the bottom need 2 pixels, so the padded side must exceed 2 ** downsamplings.
        # Beyond three downsamplings the decoder gives the padded size back only for multiples of
        # 2 ** downsamplings, so the smallest side that runs is one such multiple.
        step = max(PAD_MODULO, 2 ** downsamplings)
        padded = (2 ** downsamplings // step + 1) * step
        return 1 if padded == PAD_MODULO else padded - PAD_MODULO + 1

    def _check_size(self, height: int, width: int, what: str) -> None:
        """Raise ValueError when an input of height x width is smaller than ``min_side`` on a side."""
        needed = self.min_side
        if min(height, width) < needed:
            raise ValueError(f"{what} {width}x{height} pixels; this model needs at least {needed} pixels "
                             f"on each side")

    @torch.no_grad()
    def inpaint_batch(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Inpaint N×3×H×W images in [0, 1] under N×1×H×W masks (non-zero = hole); returns N×3×H×W in [0, 1].

        The whole images run through the network (no high-resolution strategy)."""
        if not torch.is_tensor(images) or not torch.is_tensor(masks):
            raise TypeError("inpaint_batch takes torch tensors for images and masks")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape Nx3xHxW, got {tuple(images.shape)}")
        if masks.ndim != 4 or masks.shape[1] != 1:
            raise ValueError(f"masks must have shape Nx1xHxW, got {tuple(masks.shape)}")
        if images.shape[0] != masks.shape[0] or images.shape[2:] != masks.shape[2:]:
            raise ValueError(
                f"images {tuple(images.shape)} and masks {tuple(masks.shape)} differ in batch or spatial size"
            )
        if images.numel() == 0:
            raise ValueError(f"images are empty: shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"images must be a floating-point tensor in [0, 1], got {images.dtype}")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        if images.min() < 0 or images.max() > 1:
            raise ValueError("images must lie in [0, 1]")
        self._check_size(images.shape[2], images.shape[3], "images are")
        return self._run(images, masks != 0).to(images.device, images.dtype)

    def _run(self, images: torch.Tensor, holes: torch.Tensor) -> torch.Tensor:
        """The original pipeline on checked N×3×H×W images in [0, 1] and N×1×H×W boolean holes."""
        height, width = images.shape[2:]
        # A crop box or resized copy of an image that passed __call__'s check can still be thinner.
        self._check_size(height, width, "the network input is")
        image = pad_to_modulo(images.to(self.device, self.dtype))
        hole = pad_to_modulo(holes.to(self.device)).to(self.dtype)
        output = self.generator(torch.cat((image * (1 - hole), hole), dim=1))
        if not torch.isfinite(output).all():
            raise RuntimeError("the generator produced NaN or infinite values")
        blended = hole * output + (1 - hole) * image
        return blended[:, :, :height, :width]

    def plan(
        self,
        size: Tuple[int, int],
        hole: torch.Tensor,
        hd_strategy: Optional[str] = None,
        crop_margin: Optional[int] = None,
        crop_trigger_size: Optional[int] = None,
        resize_limit: Optional[int] = None,
        max_memory: Optional[Union[int, str]] = None,
    ) -> hd.Plan:
        """What a call with these settings would run for an image of ``size`` (H, W) under the
        boolean H×W ``hole``, after the memory guard; raises InsufficientMemoryError when nothing fits."""
        settings = self.hd.replace(strategy=hd_strategy, crop_margin=crop_margin,
                                   crop_trigger_size=crop_trigger_size, resize_limit=resize_limit)
        return self._plan(settings, size, hole, max_memory)

    def _plan(self, settings: hd.HDSettings, size: Tuple[int, int], hole: torch.Tensor,
              max_memory: Optional[Union[int, str]]) -> hd.Plan:
        budget = memory.parse_size(max_memory) if max_memory is not None else self.max_memory
        guarded = budget is not None or self.device.type == "cpu"
        if budget is None and guarded:
            budget = memory.available_bytes()
        # A fast generator may compute in another dtype than it takes in (bfloat16 inside, float32 at its ends).
        compute = getattr(self.generator, "compute_dtype", self.dtype)
        return hd.make_plan(settings, size, hole, self.backend, compute, budget if guarded else None,
                            explicit_budget=max_memory is not None or self.max_memory is not None,
                            min_side=self.min_side)

    @torch.no_grad()
    def __call__(
        self,
        image: Any,
        mask: Any,
        *,
        hd_strategy: Optional[str] = None,
        mask_threshold: float = 0,
        crop_margin: Optional[int] = None,
        crop_trigger_size: Optional[int] = None,
        resize_limit: Optional[int] = None,
        max_memory: Optional[Union[int, str]] = None,
    ) -> Any:
        """Inpaint one image under a mask; returns the image's own type, layout and dtype.

        ``image``: numpy, PIL or torch; RGB, RGBA (alpha kept) or greyscale; uint8 or float in [0, 1].
        ``mask``: bool, 0/1, 0/255, greyscale or 3-channel; a pixel is a hole when its value is
        above ``mask_threshold`` (default 0: any non-zero pixel, as the original LaMa).
        The other keywords override the Inpainter's high-resolution settings for this call.
        """
        settings = self.hd.replace(strategy=hd_strategy, crop_margin=crop_margin,
                                   crop_trigger_size=crop_trigger_size, resize_limit=resize_limit)
        if max_memory is not None:
            memory.parse_size(max_memory)
        prepared = prepare_image(image)
        hole = prepare_mask(mask, prepared.size, mask_threshold)
        # Whatever the mask holds, so that a too small image fails on its first call.
        self._check_size(*prepared.size, "image is")
        if not bool(hole.any()):
            return prepared.restore(prepared.rgb, hole)
        plan = self._plan(settings, prepared.size, hole, max_memory)
        for note in plan.notes:
            warnings.warn(note, RuntimeWarning, stacklevel=2)
        rgb = prepared.rgb
        out = rgb.clone()
        hole_here = hole.to(rgb.device)
        if plan.strategy == "resize" and plan.run_size is not None:
            small, small_hole = hd.downscale(self._as_float(rgb), hole, plan.run_size)
            result = self._run(small[None], small_hole[None, None])[0]
            full = hd.upscale(result.to(rgb.device), prepared.size)
            self._paste(out, full, hole_here, hd.Box(0, 0, *prepared.size))
        else:
            for box in plan.boxes:
                rows, cols = box.slices()
                region_hole = hole_here[rows, cols]
                result = self._run(self._as_float(rgb[:, rows, cols])[None], region_hole[None, None])[0]
                self._paste(out, result.to(rgb.device), hole_here, box)
        return prepared.restore(out, hole)

    def refine(
        self,
        image: Any,
        mask: Any,
        *,
        n_iters: int = 15,
        lr: float = 0.002,
        min_side: int = 512,
        max_scales: int = 3,
        px_budget: int = 1_800_000,
        modulo: int = 8,
        full_size: bool = False,
        mask_threshold: float = 0,
        progress: Optional[Callable[[int, int, int, int, Optional[float]], None]] = None,
    ) -> Any:
        """Inpaint one image with the original LaMa's refinement (``predict.py refine=True``).

        Takes and returns what ``__call__`` does (numpy, PIL or torch; uint8 or float; pixels outside
        the hole are the input's, bit for bit).  A pyramid of up to ``max_scales`` scales, the short
        side halved down to about ``min_side`` / sqrt(2); at each scale after the first, ``n_iters``
        forwards of the generator's rear with Adam (learning rate ``lr``) on its features between
        them, so that the prediction matches the known pixels and, scaled down, the scale below.
        Each scale is padded (torch ``reflect``) to a multiple of ``modulo``.  uint8 hole pixels are
        the result x 255, clipped and truncated, as the original writes them.  The defaults are the
        released ones; ``lama_fast.refine`` holds the pieces, ``progress`` is called after each
        forward (see ``refine_tensors``).  Runs on the reference and cpu backends; no
        high-resolution strategy or memory guard applies.

        An image of more than ``px_budget`` pixels is refined at int(h r) x int(w r) with
        r = sqrt(px_budget / (h w)), as the original does.  By default the result then comes back at
        that size with a RuntimeWarning: every pixel, alpha included, is the input resized
        bilinearly (uint8 truncated), except the hole pixels, which are refined.
        ``full_size=True`` scales the refined result back up (bilinear) and pastes its hole pixels
        into the input at the input's size instead."""
        settings = RefineSettings(n_iters=n_iters, lr=lr, min_side=min_side, max_scales=max_scales,
                                  px_budget=px_budget, modulo=modulo)
        if not isinstance(full_size, bool):
            raise TypeError(f"full_size must be True or False, got {full_size!r}")
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be callable, got {type(progress).__name__}")
        check_backend(self.backend)
        prepared = prepare_image(image)
        hole = prepare_mask(mask, prepared.size, mask_threshold)
        self._check_size(*prepared.size, "image is")
        if not bool(hole.any()):
            return prepared.restore(prepared.rgb, hole)
        height, width = prepared.size
        downsamplings = self._downsamplings()
        if settings.modulo % 2 ** downsamplings:
            raise ValueError(f"modulo must be a multiple of {2 ** downsamplings} for this model (it halves its "
                             f"input {downsamplings} times), got {settings.modulo}")
        check_sizes(height, width, settings)
        resized, sizes = plan_sizes(height, width, settings)
        small_h, small_w = sizes[0]  # the lowest resolution
        if min(small_h, small_w) < self.min_side:
            raise ValueError(f"refine's smallest scale would be {small_w}x{small_h} pixels; this model needs at "
                             f"least {self.min_side} pixels on each side: raise min_side or px_budget")
        rgb = prepared.rgb
        model = refine_model(self.generator, self.backend)
        # In the refinement's own dtype (uint8 divided by 255 there, as the original).
        image_float = rgb.to(model.device, model.dtype)
        if rgb.dtype == torch.uint8:
            image_float = image_float / 255
        result = refine_tensors(model, image_float[None], hole.to(model.device, model.dtype)[None, None], settings,
                                progress)
        if not torch.isfinite(result.output).all():
            raise RuntimeError("the refinement produced NaN or infinite values")
        if resized is None or full_size:
            output = result.output
            if resized is not None:
                output = F.interpolate(output, size=prepared.size, mode="bilinear", align_corners=False).clamp_(0, 1)
            out = rgb.clone()
            self._paste(out, output[0].to(rgb.device), hole.to(rgb.device), hd.Box(0, 0, height, width))
            return prepared.restore(out, hole)
        small_height, small_width = resized
        warnings.warn(f"refine: the image is {width}x{height} pixels, more than px_budget={settings.px_budget}; "
                      f"it was refined and is returned at {small_width}x{small_height} (full_size=True pastes "
                      f"the refined hole back at the input's size)", RuntimeWarning, stacklevel=2)
        small = prepare_image(resize_input(image, resized, model.dtype, model.device))
        small_hole = result.hole.cpu()
        out = small.rgb.clone()
        self._paste(out, result.output[0].to(out.device), small_hole.to(out.device),
                    hd.Box(0, 0, small_height, small_width))
        return small.restore(out, small_hole)

    def _as_float(self, rgb: torch.Tensor) -> torch.Tensor:
        """An image in [0, 1] in the model's float dtype (uint8 divided by 255 there, as the original)."""
        if rgb.dtype == torch.uint8:
            return rgb.to(self.device, self.dtype) / 255
        return rgb.to(self.device, self.dtype)

    @staticmethod
    def _paste(out: torch.Tensor, result: torch.Tensor, hole: torch.Tensor, box: hd.Box) -> None:
        """Write ``result`` (float, [0, 1]) into ``out`` at the box's hole pixels; uint8 truncates as the original."""
        rows, cols = box.slices()
        if out.dtype == torch.uint8:
            values = (result * 255).clamp_(0, 255).to(torch.uint8)
        else:
            values = result.to(out.dtype)
        region = out[:, rows, cols]
        region.copy_(torch.where(hole[rows, cols], values, region))
