"""The FastAPI application of ``lama-fast serve``: IOPaint's API, the native API, health, metrics, the page.

Every inpainting request goes the same way: the key and the body's declared size are checked
(:mod:`.guard`), it takes a place in the queue or gets 503 (:mod:`.queue`), its body is read within a
time limit, its images are checked from their headers and decoded (:mod:`.codec`), the model runs it
on the one inference thread, and the result is encoded in the input's format.

A request may ask for refinement instead (native ``refine=true``, IOPaint's ``"refine": true``):
``Inpainter.refine`` runs through the same queue and thread. It takes seconds to minutes, and no
time limit of the server cuts it short: the queue has none, uvicorn's graceful stop waits for it, and
only the body's read is timed (before the request reaches the queue). Clients set their own timeout
long enough; one that gives up leaves the model to finish the refinement, whose answer is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..hd import STRATEGIES
from . import codec, iopaint
from .codec import RequestError
from .guard import BodyTooLarge, Guard
from .metrics import CONTENT_TYPE, Metrics
from .model import Model, inpaint
from .queue import InferenceQueue, QueueFull
from .settings import ServeSettings

STATIC_DIR = Path(__file__).with_name("static")
# The refinement fields of the native form and the Inpainter.refine keyword each sets.
REFINE_FIELDS = {"refine_n_iters": ("n_iters", int), "refine_lr": ("lr", float), "refine_min_side": ("min_side", int),
                 "refine_max_scales": ("max_scales", int), "refine_px_budget": ("px_budget", int),
                 "refine_modulo": ("modulo", int), "refine_full_size": ("full_size", bool)}
NATIVE_FIELDS = {"hd_strategy": str, "crop_margin": int, "crop_trigger_size": int, "resize_limit": int,
                 "mask_threshold": float, "format": str, "refine": bool,
                 **{name: kind for name, (_, kind) in REFINE_FIELDS.items()}}
# The fields of the high-resolution strategies, which refinement replaces by its own resize to a pixel budget.
NOT_WITH_REFINE = ("hd_strategy", "crop_margin", "crop_trigger_size", "resize_limit")
TRUE_WORDS, FALSE_WORDS = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
ROUTES = ("/", "/healthz", "/metrics", "/docs", "/openapi.json", "/v1/config", "/v1/inpaint",
          "/api/v1/inpaint", "/api/v1/server-config", "/api/v1/model")
log = logging.getLogger("lama_fast.serve")


def create_app(model: Union[Model, Any], settings: ServeSettings, title: str = "lama-fast serve") -> FastAPI:
    """The application around ``model`` (a :class:`Model`, loaded when the app starts, or an Inpainter)."""
    if not isinstance(model, Model):
        model = Model.loaded(model)
    metrics = Metrics(ROUTES)
    queue = InferenceQueue(settings.max_queue, on_change=metrics.queue_changed)

    def loaded(seconds: float) -> None:
        metrics.load_seconds.set(seconds)
        metrics.ready.set(1)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        model.start(on_loaded=loaded)
        yield
        await run_in_threadpool(queue.shutdown)

    app = FastAPI(title=title, lifespan=lifespan, summary="LaMa inpainting: IOPaint's API and a native one",
                  version=_version())
    app.state.model, app.state.queue, app.state.settings, app.state.metrics = model, queue, settings, metrics
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(BodyTooLarge, _body_too_large)
    app.add_exception_handler(QueueFull, _queue_full)
    _add_routes(app, model, queue, settings, metrics)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    app.add_middleware(Guard, max_body=settings.max_body, api_key=settings.api_key, metrics=metrics,
                       route_of=metrics.route_of)
    return app


def _version() -> str:
    from .. import __version__

    return __version__


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)


async def _body_too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=413, headers={"Connection": "close"})


async def _queue_full(request: Request, exc: QueueFull) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})


def _add_routes(app: FastAPI, model: Model, queue: InferenceQueue, settings: ServeSettings,
                metrics: Metrics) -> None:
    run = _Runner(model, queue, settings, metrics)

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        index = STATIC_DIR / "index.html"
        if not index.is_file():
            return JSONResponse({"detail": "the web page is not installed"}, status_code=404)
        return FileResponse(index, media_type="text/html")

    @app.get("/healthz", summary="Ready once the model is loaded (200), else 503")
    async def healthz() -> JSONResponse:
        if model.ready:
            return JSONResponse({"status": "ready", "load_seconds": model.load_seconds, **model.describe()})
        if model.error is not None:
            return JSONResponse({"status": "failed", "detail": model.error}, status_code=503)
        return JSONResponse({"status": "loading"}, status_code=503, headers={"Retry-After": "5"})

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/config", summary="The model, the server's limits and whether it refines")
    async def config() -> JSONResponse:
        hd = model.inpainter.hd if model.ready else None
        refusal = refine_refusal(model, settings)
        return JSONResponse({
            "model": iopaint.MODEL_NAME, "ready": model.ready, **model.describe(),
            "max_pixels": settings.max_pixels, "max_body_bytes": settings.max_body, "max_queue": settings.max_queue,
            "auth": settings.api_key is not None,
            **({"hd_strategy": hd.strategy, "crop_margin": hd.crop_margin, "crop_trigger_size": hd.crop_trigger_size,
                "resize_limit": hd.resize_limit} if hd is not None else {}),
            "refine": refusal is None, **({"refine_refused": refusal} if refusal is not None else {}),
            **refine_defaults(settings),
        })

    @app.post("/v1/inpaint", summary="Inpaint an image under a mask (multipart files image and mask)",
              response_class=Response, openapi_extra=_NATIVE_OPENAPI, responses=_IMAGE_RESPONSES)
    async def inpaint_native(request: Request) -> Response:
        with run.admit():
            form = await run.read(request, request.form(max_files=2, max_fields=len(NATIVE_FIELDS),
                                                        max_part_size=64 * 1024))
            image_data, mask_data, fields = await _native_form(form)
            options, refine, wanted = _native_options(fields, model, settings)
            image, mask, fmt = await run_in_threadpool(codec.read_pair, image_data, mask_data, settings.max_pixels)
            return await run.answer(image, mask, options, codec.answer_format(fmt, wanted), refine)

    @app.post("/api/v1/inpaint", summary="IOPaint's inpaint request (JSON, base64 image and mask)",
              response_class=Response, openapi_extra=_iopaint_openapi(), responses=_IMAGE_RESPONSES)
    async def inpaint_iopaint(request: Request) -> Response:
        with run.admit():
            body = await run.read(request, request.body())
            req = await run_in_threadpool(_iopaint_request, body)
            if req.refine:
                check_refine_allowed(model, settings)
            options = req.refine_options(settings.refine_px_budget) if req.refine else req.options()
            image, mask, fmt = await run_in_threadpool(
                lambda: codec.read_pair(codec.decode_base64(req.image, "image"), codec.decode_base64(req.mask, "mask"),
                                        settings.max_pixels, iopaint.size_error))
            answer = await run.answer(image, mask, options, codec.answer_format(fmt), req.refine)
            answer.headers["X-Seed"] = str(req.sd_seed)
            return answer

    @app.get("/api/v1/server-config", summary="IOPaint's server configuration")
    async def server_config() -> JSONResponse:
        return JSONResponse(iopaint.server_config())

    @app.get("/api/v1/model", summary="IOPaint's current model: LaMa")
    async def current_model() -> JSONResponse:
        return JSONResponse(iopaint.model_info())

    @app.post("/api/v1/model", summary="IOPaint's model switch: only lama is served")
    async def switch_model(request: Request) -> JSONResponse:
        body = await run.read(request, request.body())
        try:
            name = json.loads(body).get("name")
        except (ValueError, AttributeError, RecursionError):
            raise RequestError(422, "the body must be a JSON object like {\"name\": \"lama\"}") from None
        if name != iopaint.MODEL_NAME:
            raise RequestError(400, f"this server runs {iopaint.MODEL_NAME} only, not {name!r}")
        return JSONResponse(iopaint.model_info())


class _Runner:
    """What the two inpainting routes share: admission, reading the body, running the model, answering."""

    def __init__(self, model: Model, queue: InferenceQueue, settings: ServeSettings, metrics: Metrics) -> None:
        self.model, self.queue, self.settings, self.metrics = model, queue, settings, metrics

    def admit(self) -> Any:
        if not self.model.ready:
            if self.model.error is not None:
                raise RequestError(503, f"the model could not be loaded: {self.model.error}")
            raise RequestError(503, "the model is still loading", {"Retry-After": "5"})
        return self.queue.admit()

    async def read(self, request: Request, reading: Any) -> Any:
        """Await a body read, refused after the body time limit (408)."""
        try:
            return await asyncio.wait_for(reading, self.settings.body_timeout)
        except asyncio.TimeoutError:
            raise RequestError(408, f"the request body did not arrive within {self.settings.body_timeout:g} s",
                               {"Connection": "close"}) from None
        except BodyTooLarge:
            raise
        except (ValueError, KeyError, AssertionError) as error:  # a malformed multipart body
            raise RequestError(400, f"cannot read the request body: {error}") from None

    async def answer(self, image: Image.Image, mask: Image.Image, options: Dict[str, Any], fmt: str,
                     refine: bool = False) -> Response:
        """Run the model (its refinement with ``refine``) on the worker thread, encode its result;
        X-Queue-Seconds is the wait for the model."""
        submitted = time.perf_counter()
        started = []

        def job() -> Tuple[Any, list, float]:
            started.append(time.perf_counter())
            return self._inpaint(image, mask, options, refine)

        result, notes, seconds = await self.queue.run(job)
        self.metrics.inference.observe(seconds)
        data = await run_in_threadpool(codec.encode, result, fmt, image.info, self.settings.jpeg_quality)
        headers = {"X-Inpaint-Seconds": f"{seconds:.4f}", "X-Queue-Seconds": f"{started[0] - submitted:.4f}"}
        if notes:
            headers["X-Inpaint-Notes"] = " | ".join(notes).encode("ascii", "replace").decode()
        return Response(data, media_type=codec.MEDIA_TYPE[fmt], headers=headers)

    def _inpaint(self, image: Image.Image, mask: Image.Image, options: Dict[str, Any],
                 refine: bool = False) -> Tuple[Any, list, float]:
        try:
            return inpaint(self.model.inpainter, image, mask, options, refine)
        except MemoryError as error:  # the memory guard's InsufficientMemoryError names the numbers
            raise RequestError(413, str(error) or "out of memory for this image") from None
        except (ValueError, TypeError) as error:
            raise RequestError(400, _refine_field_named(str(error)) if refine else str(error)) from None
        except Exception as error:
            log.exception("inference failed")
            if "out of memory" in str(error).lower():
                raise RequestError(503, "the device ran out of memory; retry later",
                                   {"Retry-After": str(self.queue.retry_after())}) from None
            raise RequestError(500, f"inference failed: {type(error).__name__}") from None


async def _native_form(form: Any) -> Tuple[bytes, bytes, Dict[str, str]]:
    """The image's and the mask's bytes and the text fields of a multipart form."""
    files, fields = {}, {}
    for name, value in form.multi_items():
        if hasattr(value, "read"):
            if name not in ("image", "mask") or name in files:
                raise RequestError(400, f"unexpected file field {name!r}; send one 'image' and one 'mask'")
            files[name] = await value.read()
        else:
            if name not in NATIVE_FIELDS:
                raise RequestError(400, f"unknown field {name!r}; the fields are {', '.join(NATIVE_FIELDS)}")
            fields[name] = value
    missing = [name for name in ("image", "mask") if name not in files]
    if missing:
        raise RequestError(422, f"the form needs the files 'image' and 'mask' (multipart/form-data); "
                                f"missing: {', '.join(missing)}")
    return files["image"], files["mask"], fields


def _refine_field_named(message: str) -> str:
    """A refinement error that starts with a setting's name (``modulo must be ...``), with the name of its
    native field (``refine_modulo must be ...``)."""
    first = message.split(" ", 1)[0]
    return f"refine_{message}" if f"refine_{first}" in REFINE_FIELDS else message


def _field_value(name: str, text: str) -> Any:
    """A native form field's text as its type; 400 naming the field when it is not one."""
    kind = NATIVE_FIELDS[name]
    if kind is str:
        return text
    if kind is bool:
        word = text.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise RequestError(400, f"{name} must be true or false, got {text!r}")
    try:
        return kind(text)
    except ValueError:
        raise RequestError(400, f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


def refine_refusal(model: Model, settings: ServeSettings) -> Optional[str]:
    """Why this server refuses refinement requests, or None when it takes them."""
    if not settings.refine:
        return "refinement is turned off on this server (lama-fast serve --no-refine)"
    if model.ready:
        from ..refine import check_backend

        try:
            check_backend(model.inpainter.backend)
        except ValueError as error:
            return f"this server does not refine: {error}"
    return None


def check_refine_allowed(model: Model, settings: ServeSettings) -> None:
    """403 naming the reason when this server does not refine."""
    refusal = refine_refusal(model, settings)
    if refusal is not None:
        raise RequestError(403, refusal)


def refine_defaults(settings: ServeSettings) -> Dict[str, Any]:
    """The refinement settings of a request that gives none, as the native fields name them."""
    from ..refine import RefineSettings

    defaults = RefineSettings(px_budget=settings.refine_px_budget)
    return {f"refine_{name}": getattr(defaults, name)
            for name in ("n_iters", "lr", "min_side", "max_scales", "px_budget", "modulo")}


def _native_options(fields: Dict[str, str], model: Model,
                    settings: ServeSettings) -> Tuple[Dict[str, Any], bool, Optional[str]]:
    """The keywords of the native form's fields, checked (the Inpainter's, or with ``refine=true``
    Inpainter.refine's), whether to refine, and the answer format asked for."""
    options = {name: _field_value(name, text) for name, text in fields.items() if name != "format"}
    refine = options.pop("refine", False)
    if refine:
        check_refine_allowed(model, settings)
        return _refine_options(options, settings), True, fields.get("format")
    for name in REFINE_FIELDS:
        if name in options:
            raise RequestError(400, f"{name} goes with refine=true")
    if "hd_strategy" in options and options["hd_strategy"] not in STRATEGIES:
        raise RequestError(400, f"hd_strategy must be one of {', '.join(STRATEGIES)}, got {options['hd_strategy']!r}")
    threshold = options.get("mask_threshold", 0)
    if not 0 <= threshold < 65535:
        raise RequestError(400, f"mask_threshold must lie in [0, 65535), got {threshold:g}")
    from ..inpaint import Inpainter

    try:
        Inpainter.check_settings(**{k: v for k, v in options.items() if k != "mask_threshold"})
    except (ValueError, TypeError) as error:
        raise RequestError(400, str(error)) from None
    return options, False, fields.get("format")


def _refine_options(options: Dict[str, Any], settings: ServeSettings) -> Dict[str, Any]:
    """The Inpainter.refine keywords of a native refinement request: the server's pixel budget unless the
    request gives a smaller one, the answer at the image's size unless ``refine_full_size=false``."""
    from ..refine import RefineSettings

    for name in NOT_WITH_REFINE:
        if name in options:
            raise RequestError(400, f"{name} does not go with refine=true: refinement runs on the whole image "
                                    f"resized to refine_px_budget pixels")
    threshold = options.get("mask_threshold", 0)
    if not 0 <= threshold < 65535:
        raise RequestError(400, f"mask_threshold must lie in [0, 65535), got {threshold:g}")
    keywords = {keyword: options[name] for name, (keyword, _) in REFINE_FIELDS.items() if name in options}
    budget = keywords.setdefault("px_budget", settings.refine_px_budget)
    if budget > settings.refine_px_budget:
        raise RequestError(400, f"refine_px_budget must be at most this server's {settings.refine_px_budget} "
                                f"pixels (lama-fast serve --refine-px-budget), got {budget}")
    keywords.setdefault("full_size", True)
    try:
        RefineSettings(**{k: v for k, v in keywords.items() if k != "full_size"})
    except (ValueError, TypeError) as error:
        raise RequestError(400, _refine_field_named(str(error))) from None
    return {**keywords, "mask_threshold": threshold}


def _iopaint_request(body: bytes) -> iopaint.InpaintRequest:
    from pydantic import ValidationError

    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(422, f"the body is not JSON: {error}") from None
    except RecursionError:
        raise RequestError(422, "the body is not JSON this server reads: nested too deeply") from None
    if not isinstance(payload, dict):
        raise RequestError(422, "the body must be a JSON object with the fields image and mask")
    try:
        return iopaint.InpaintRequest.model_validate(payload)
    except ValidationError as error:
        raise RequestError(422, iopaint.first_error(error)) from None


_IMAGE_RESPONSES: Dict[Union[int, str], Dict[str, Any]] = {
    200: {"description": "the inpainted image, in the input's format",
          "content": {media: {} for media in ("image/png", "image/jpeg", "image/webp")}},
    400: {"description": "undecodable image, wrong mask size, bad field"},
    401: {"description": "missing or wrong API key"},
    403: {"description": "refinement asked of a server that does not refine"},
    413: {"description": "body or image over the server's limits"},
    415: {"description": "not an image format the server reads"},
    422: {"description": "missing field or malformed body"},
    503: {"description": "busy (Retry-After) or the model is loading"},
}

_NATIVE_OPENAPI: Dict[str, Any] = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image", "mask"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "PNG, JPEG, WebP, BMP, TIFF or GIF"},
        "mask": {"type": "string", "format": "binary", "description": "same size; a hole where above mask_threshold"},
        "hd_strategy": {"type": "string", "enum": list(STRATEGIES)},
        "crop_margin": {"type": "integer", "minimum": 0},
        "crop_trigger_size": {"type": "integer", "minimum": 1},
        "resize_limit": {"type": "integer", "minimum": 1},
        "mask_threshold": {"type": "number", "minimum": 0, "default": 0},
        "format": {"type": "string", "enum": list(codec.FORMAT_NAMES), "default": "same"},
        "refine": {"type": "boolean", "default": False,
                   "description": "refine the result (the original LaMa's refinement: seconds to minutes): the "
                                  "whole image, resized to refine_px_budget pixels if larger; not with hd_strategy, "
                                  "crop_margin, crop_trigger_size, resize_limit. 403 when the server does not "
                                  "refine (GET /v1/config: refine)"},
        "refine_n_iters": {"type": "integer", "minimum": 1, "default": 15,
                           "description": "with refine: forwards per scale after the first"},
        "refine_lr": {"type": "number", "exclusiveMinimum": 0, "default": 0.002,
                      "description": "with refine: Adam's learning rate"},
        "refine_min_side": {"type": "integer", "minimum": 1, "default": 512,
                            "description": "with refine: the pyramid stops before a scale's short side falls below "
                                           "about this / sqrt(2)"},
        "refine_max_scales": {"type": "integer", "minimum": 1, "default": 3,
                              "description": "with refine: at most this many scales"},
        "refine_px_budget": {"type": "integer", "minimum": 1,
                             "description": "with refine: an image of more pixels is refined resized to about "
                                            "this many; default and maximum the server's (GET /v1/config: "
                                            "refine_px_budget)"},
        "refine_modulo": {"type": "integer", "minimum": 1, "default": 8,
                          "description": "with refine: each scale is padded to a multiple of this"},
        "refine_full_size": {"type": "boolean", "default": True,
                             "description": "with refine: answer an image resized by refine_px_budget at its own "
                                            "size (false: at the size it was refined at)"},
    }}}}}}


def _iopaint_openapi() -> Dict[str, Any]:
    schema = iopaint.InpaintRequest.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
