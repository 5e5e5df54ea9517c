"""``lama-fast serve``: LaMa over HTTP, with IOPaint's API, a native API and a web page.

    from lama_fast.serve import ServeSettings, create_app
    app = create_app(lama_fast.load("big-lama.pt"), ServeSettings(max_queue=8))   # any ASGI server runs it

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart, prometheus-client); ``import lama_fast``
never imports this package.

- :mod:`.app`      the routes and the way every inpainting request goes
- :mod:`.codec`    bytes to images and back, limits checked from the header, formats kept
- :mod:`.guard`    the API key, the body's size limit and the request metrics, before any route
- :mod:`.queue`    one inference at a time behind a bounded queue (503 + Retry-After when full)
- :mod:`.iopaint`  IOPaint's request fields, model description and server configuration
- :mod:`.model`    loading the model on its own thread; one inference with its warnings
- :mod:`.metrics`  the Prometheus metrics
- :mod:`.run`      the uvicorn process: listening, graceful stop on SIGTERM/SIGINT
- ``static/``      the web page (no build step)
"""

from typing import Any

from .settings import ServeSettings, default_max_queue, is_loopback

__all__ = ["ServeSettings", "create_app", "default_max_queue", "is_loopback"]


def __getattr__(name: str) -> Any:
    # The settings are read by the command line's parser, which must work without the serve extra.
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
