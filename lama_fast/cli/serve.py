"""``lama-fast serve``: the model behind an HTTP server (IOPaint's API, a native API, a web page)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

import torch

from .common import CliError, device_arg, dtype_arg, int_in, max_memory, reading_checkpoint
from .inpaint import CHECKPOINT_ENV, DTYPES, checkpoint_path

API_KEY_ENV = "LAMA_FAST_API_KEY"
SERVE_PACKAGES = ("fastapi", "uvicorn", "multipart", "prometheus_client")


def cmd_serve(args) -> int:
    missing = [name for name in SERVE_PACKAGES if not _importable(name)]
    if missing:
        raise CliError(f"lama-fast serve needs the serve extra ({', '.join(missing)} not installed): "
                       f"pip install 'lama_fast[serve]'")
    from ..inpaint import Inpainter
    from ..serve import ServeSettings, default_max_queue, is_loopback
    from ..serve.settings import DEFAULT_REFINE_PX_BUDGET

    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV) or None
    if api_key is not None and args.no_auth:
        raise CliError("--api-key and --no-auth exclude each other")
    if not is_loopback(args.host) and api_key is None and not args.no_auth:
        raise CliError(f"binding to {args.host} lets other machines in: give --api-key KEY (or set {API_KEY_ENV}), "
                       f"or pass --no-auth to serve without a key")
    if args.no_auth and not is_loopback(args.host):
        print(f"lama-fast serve: warning: serving on {args.host} without an API key (--no-auth): anyone who can "
              f"reach this port can use it", file=sys.stderr)
    if args.no_refine and args.refine_px_budget is not None:
        raise CliError("--refine-px-budget goes without --no-refine: it limits the refinement requests a server takes")
    checkpoint = checkpoint_path(args)
    options = _model_settings(args)
    try:
        Inpainter.check_settings(**options)
        settings = ServeSettings(
            max_queue=args.max_queue if args.max_queue is not None else default_max_queue(args.max_body,
                                                                                          args.max_pixels),
            max_pixels=args.max_pixels, max_body=args.max_body, api_key=api_key, jpeg_quality=args.jpeg_quality,
            refine=not args.no_refine, refine_px_budget=args.refine_px_budget or DEFAULT_REFINE_PX_BUDGET)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    from ..backends import select_backend

    select_backend(args.backend, torch.device(args.device), args.dtype)  # a bad choice fails before the port opens
    from ..serve.run import serve

    def load():
        from .. import load as load_checkpoint

        with reading_checkpoint(checkpoint):
            return load_checkpoint(checkpoint, device=args.device, backend=args.backend, dtype=args.dtype, **options)

    refining = (f"refinement up to {settings.refine_px_budget / 1e6:g} MP" if settings.refine
                else "no refinement")
    print(f"lama-fast serve: loading {checkpoint} (queue {settings.max_queue}, at most "
          f"{settings.max_pixels / 1e6:g} MP and {settings.max_body / 2 ** 20:g} MiB a request, {refining})",
          file=sys.stderr, flush=True)
    try:
        error = serve(load, settings, args.host, args.port, access_log=args.access_log)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    if error is not None:
        raise CliError(error)
    return 0


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _model_settings(args) -> dict:
    given = {"hd_strategy": args.hd_strategy, "crop_margin": args.crop_margin,
             "crop_trigger_size": args.crop_trigger_size, "resize_limit": args.resize_limit,
             "max_memory": args.max_memory}
    return {name: value for name, value in given.items() if value is not None}


def add_parser(add_command: Callable[..., argparse.ArgumentParser]) -> None:
    from ..serve.settings import DEFAULT_MAX_BODY, DEFAULT_MAX_PIXELS, DEFAULT_REFINE_PX_BUDGET, JPEG_QUALITY

    p = add_command("serve", help="serve the model over HTTP: a web page, IOPaint's API and a native API",
                    description="Load the model once and serve it until SIGTERM/SIGINT (which let the requests "
                                "in flight finish). Needs the serve extra: pip install 'lama_fast[serve]'.")
    p.add_argument("--checkpoint", help=f"LaMa weights (.ckpt, .pt, .safetensors); default ${CHECKPOINT_ENV}")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs --api-key or --no-auth)")
    p.add_argument("--port", type=int_in(0, 65535, "port"), default=8080, help="default 8080 (0: any free port)")
    p.add_argument("--device", type=device_arg, default="cpu", help="cpu (default), cuda, cuda:1, ...")
    p.add_argument("--backend", default="auto", help="auto (default) or a backend of lama-fast info")
    p.add_argument("--dtype", type=dtype_arg, default=torch.float32, help=f"{', '.join(DTYPES)} (default float32)")
    p.add_argument("--hd-strategy", choices=("original", "crop", "resize"),
                   help="default for requests that do not say (default crop)")
    p.add_argument("--crop-margin", type=int_in(0, None, "crop margin"), help="default 128")
    p.add_argument("--crop-trigger-size", type=int_in(1, None, "crop trigger size"), help="default 800")
    p.add_argument("--resize-limit", type=int_in(1, None, "resize limit"), help="default 1280")
    p.add_argument("--max-memory", type=max_memory, help="memory a request may use, e.g. 8G (default: what is free)")
    p.add_argument("--max-queue", type=int_in(0, 100000, "queue size"),
                   help="requests that may wait behind the one running; more get 503 with Retry-After "
                        "(default: two per core, 2 to 32, fewer if memory is short)")
    p.add_argument("--max-pixels", type=int_in(1, None, "pixel limit"), default=DEFAULT_MAX_PIXELS,
                   help=f"largest image in pixels, from its header (default {DEFAULT_MAX_PIXELS:,}); larger: 413")
    p.add_argument("--max-body", type=max_memory, default=DEFAULT_MAX_BODY,
                   help=f"largest request body, e.g. 64M (default {DEFAULT_MAX_BODY // 2 ** 20}M); larger: 413")
    p.add_argument("--api-key", help=f"key every API request must send (Authorization: Bearer KEY or X-API-Key); "
                                     f"default ${API_KEY_ENV}")
    p.add_argument("--no-auth", action="store_true", help="serve a non-loopback address without a key")
    p.add_argument("--jpeg-quality", type=int_in(1, 100, "JPEG quality"), default=JPEG_QUALITY,
                   help=f"quality of JPEG answers (default {JPEG_QUALITY})")
    p.add_argument("--refine-px-budget", type=int_in(1, None, "refine pixel budget"), metavar="PIXELS",
                   help=f"pixels a refinement request (refine=true) refines at: its default and its maximum; a "
                        f"request asking more gets 400, larger images are resized to it (default "
                        f"{DEFAULT_REFINE_PX_BUDGET:,})")
    p.add_argument("--no-refine", action="store_true",
                   help="refuse refinement requests (403): refinement holds the model for seconds to minutes")
    p.add_argument("--access-log", action="store_true", help="log every request on stderr")
    p.set_defaults(func=cmd_serve)
