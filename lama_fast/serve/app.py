"""The FastAPI application of ``lama-fast serve``: IOPaint's API, the native API, health, metrics, the page.

Every inpainting request goes the same way: the key and the body's declared size are checked
(:mod:`.guard`), it takes a place in the queue or gets 503 (:mod:`.queue`), its body is read within a
time limit, its images are checked from their headers and decoded (:mod:`.codec`), the model runs it
on the one inference thread, and the result is encoded in the input's format.
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
NATIVE_FIELDS = {"hd_strategy": str, "crop_margin": int, "crop_trigger_size": int, "resize_limit": int,
                 "mask_threshold": float, "format": str}
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

    @app.get("/v1/config", summary="The model and the server's limits")
    async def config() -> JSONResponse:
        hd = model.inpainter.hd if model.ready else None
        return JSONResponse({
            "model": iopaint.MODEL_NAME, "ready": model.ready, **model.describe(),
            "max_pixels": settings.max_pixels, "max_body_bytes": settings.max_body, "max_queue": settings.max_queue,
            "auth": settings.api_key is not None,
            **({"hd_strategy": hd.strategy, "crop_margin": hd.crop_margin, "crop_trigger_size": hd.crop_trigger_size,
                "resize_limit": hd.resize_limit} if hd is not None else {}),
        })

    @app.post("/v1/inpaint", summary="Inpaint an image under a mask (multipart files image and mask)",
              response_class=Response, openapi_extra=_NATIVE_OPENAPI, responses=_IMAGE_RESPONSES)
    async def inpaint_native(request: Request) -> Response:
        with run.admit():
            form = await run.read(request, request.form(max_files=2, max_fields=len(NATIVE_FIELDS),
                                                        max_part_size=64 * 1024))
            image_data, mask_data, fields = await _native_form(form)
            options, wanted = _native_options(fields)
            image, mask, fmt = await run_in_threadpool(codec.read_pair, image_data, mask_data, settings.max_pixels)
            return await run.answer(image, mask, options, codec.answer_format(fmt, wanted))

    @app.post("/api/v1/inpaint", summary="IOPaint's inpaint request (JSON, base64 image and mask)",
              response_class=Response, openapi_extra=_iopaint_openapi(), responses=_IMAGE_RESPONSES)
    async def inpaint_iopaint(request: Request) -> Response:
        with run.admit():
            body = await run.read(request, request.body())
            req = await run_in_threadpool(_iopaint_request, body)
            image, mask, fmt = await run_in_threadpool(
                lambda: codec.read_pair(codec.decode_base64(req.image, "image"), codec.decode_base64(req.mask, "mask"),
                                        settings.max_pixels, iopaint.size_error))
            answer = await run.answer(image, mask, req.options(), codec.answer_format(fmt))
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

    async def answer(self, image: Image.Image, mask: Image.Image, options: Dict[str, Any], fmt: str) -> Response:
        """Run the model on the worker thread, encode its result; X-Queue-Seconds is the wait for the model."""
        submitted = time.perf_counter()
        started = []

        def job() -> Tuple[Any, list, float]:
            started.append(time.perf_counter())
            return self._inpaint(image, mask, options)

        result, notes, seconds = await self.queue.run(job)
        self.metrics.inference.observe(seconds)
        data = await run_in_threadpool(codec.encode, result, fmt, image.info, self.settings.jpeg_quality)
        headers = {"X-Inpaint-Seconds": f"{seconds:.4f}", "X-Queue-Seconds": f"{started[0] - submitted:.4f}"}
        if notes:
            headers["X-Inpaint-Notes"] = " | ".join(notes).encode("ascii", "replace").decode()
        return Response(data, media_type=codec.MEDIA_TYPE[fmt], headers=headers)

    def _inpaint(self, image: Image.Image, mask: Image.Image,
                       options: Dict[str, Any]) -> Tuple[Any, list, float]:
        try:
            return inpaint(self.model.inpainter, image, mask, options)
        except MemoryError as error:  # the memory guard's InsufficientMemoryError names the numbers
            raise RequestError(413, str(error) or "out of memory for this image") from None
        except (ValueError, TypeError) as error:
            raise RequestError(400, str(error)) from None
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


def _native_options(fields: Dict[str, str]) -> Tuple[Dict[str, Any], Optional[str]]:
    """The Inpainter keywords of the native form's fields, checked, and the answer format asked for."""
    options: Dict[str, Any] = {}
    for name, text in fields.items():
        if name == "format":
            continue
        kind = NATIVE_FIELDS[name]
        try:
            options[name] = kind(text)
        except ValueError:
            raise RequestError(400, f"{name} must be {'an integer' if kind is int else 'a number'}, "
                                    f"got {text!r}") from None
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
    return options, fields.get("format")


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
    }}}}}}


def _iopaint_openapi() -> Dict[str, Any]:
    schema = iopaint.InpaintRequest.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
