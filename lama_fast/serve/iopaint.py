"""IOPaint's HTTP API as its clients call it: the request's fields, the model's description and the
server's configuration, with LaMa the one model.

What IOPaint does with an ``/api/v1/inpaint`` request, and so what this does: the image and the mask
come as base64 (a ``data:`` prefix allowed), the image's EXIF orientation is applied, the mask is
reduced to grey and a pixel is a hole where it is above 127, and a mask of another size is a 400
with IOPaint's words. The fields of other models (prompts, samplers, seeds...) are accepted and ignored.

One field is this server's own: ``refine`` (default false, so IOPaint's clients, which never send it,
are answered as before) asks for the original LaMa's refinement instead of one pass of the network.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

# IOPaint's names of the high-resolution strategies, to lama_fast's.
HD_STRATEGIES = {"original": "original", "crop": "crop", "resize": "resize"}
MASK_THRESHOLD = 127
MODEL_NAME = "lama"


class InpaintRequest(BaseModel):
    """The fields of IOPaint's inpaint request that LaMa uses; the rest are ignored."""

    model_config = ConfigDict(extra="ignore")

    image: str = Field(description="the image, base64 (PNG, JPEG, WebP, BMP, TIFF or GIF), "
                                   "with or without a data:image/...;base64, prefix")
    mask: str = Field(description="the mask, base64 like the image; a hole where its grey value is above 127")
    hd_strategy: str = Field("Crop", description="Crop, Resize or Original")
    hd_strategy_crop_margin: int = Field(128, ge=0, description="pixels around each hole (Crop)")
    hd_strategy_crop_trigger_size: int = Field(800, ge=1, description="Crop applies when the longer side is "
                                                                      "larger than this")
    hd_strategy_resize_limit: int = Field(1280, ge=1, description="longest side the image is resized to (Resize)")
    sd_seed: int = Field(42, description="ignored (diffusion models); echoed in the X-Seed header")
    refine: bool = Field(False, description="not an IOPaint field (IOPaint ignores it): refine the result with the "
                                            "original LaMa's refinement (seconds to minutes) at this server's "
                                            "settings (GET /v1/config); the hd_strategy fields are then ignored "
                                            "and the answer has the image's size. 403 when the server does not "
                                            "refine")

    @field_validator("hd_strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value.lower() not in HD_STRATEGIES:
            raise ValueError("must be Crop, Resize or Original")
        return value

    def options(self) -> Dict[str, Any]:
        """The Inpainter keywords of this request."""
        return {"hd_strategy": HD_STRATEGIES[self.hd_strategy.lower()],
                "crop_margin": self.hd_strategy_crop_margin,
                "crop_trigger_size": self.hd_strategy_crop_trigger_size,
                "resize_limit": self.hd_strategy_resize_limit,
                "mask_threshold": MASK_THRESHOLD}

    @staticmethod
    def refine_options(px_budget: int) -> Dict[str, Any]:
        """The Inpainter.refine keywords of a request with ``refine``: refinement's defaults with the
        server's pixel budget, the answer at the image's size."""
        return {"px_budget": px_budget, "full_size": True, "mask_threshold": MASK_THRESHOLD}


def size_error(image: Any, mask: Any) -> str:
    """IOPaint's message for a mask whose size differs from the image's (sizes as (height, width))."""
    return f"Image size({(image.height, image.width)}) and mask size({(mask.height, mask.width)}) not match."


def model_info() -> Dict[str, Any]:
    """IOPaint's description of LaMa: an erase model, no prompt, no diffusion features."""
    info: Dict[str, Any] = {"name": MODEL_NAME, "path": MODEL_NAME, "model_type": "inpaint",
                            "is_single_file_diffusers": False, "need_prompt": False, "controlnets": [],
                            "brushnets": []}
    for feature in ("strength", "outpainting", "lcm_lora", "controlnet", "brushnet", "powerpaint_v2"):
        info[f"support_{feature}"] = False
    return info


def server_config(plugins: Optional[list] = None) -> Dict[str, Any]:
    """IOPaint's server configuration: LaMa only, no plug-ins, no file manager, no model switching."""
    return {
        "plugins": plugins or [],
        "modelInfos": [model_info()],
        "removeBGModel": "briaai/RMBG-1.4",
        "removeBGModels": [],
        "realesrganModel": "realesr-general-x4v3",
        "realesrganModels": [],
        "interactiveSegModel": "vit_b",
        "interactiveSegModels": [],
        "enableFileManager": False,
        "enableAutoSaving": False,
        "enableControlnet": False,
        "controlnetMethod": None,
        "disableModelSwitch": True,
        "isDesktop": False,
        "samplers": [],
    }


def first_error(error: Any) -> str:
    """One line from a pydantic ValidationError: the first field and what is wrong with it."""
    problems = error.errors()
    if not problems:
        return str(error)
    first = problems[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "body"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where}: {first.get('msg', 'invalid')}{more}"
