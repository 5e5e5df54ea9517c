"""The ``lama-fast serve`` process: a socket bound before the model loads (so a taken port fails at
once), uvicorn serving the app, and a graceful stop: on SIGTERM or SIGINT the socket closes, the
requests in flight are answered, then the process exits 0."""

from __future__ import annotations

import signal
import socket
import sys
from typing import Any, Callable, List, Optional

import uvicorn

from .app import create_app
from .model import Model
from .settings import ServeSettings


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port``; OSError says why not (in use, no such address)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, saying where it listens once it does."""

    def __init__(self, config: uvicorn.Config, url: str, say: Callable[[str], None]) -> None:
        super().__init__(config)
        self._url, self._say = url, say

    async def startup(self, sockets: Optional[List[socket.socket]] = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._say(f"listening on {self._url}")


def serve(load: Callable[[], Any], settings: ServeSettings, host: str, port: int,
          say: Callable[[str], None] = lambda line: print(f"lama-fast serve: {line}", file=sys.stderr, flush=True),
          log_level: str = "warning", access_log: bool = False) -> Optional[str]:
    """Serve until SIGTERM or SIGINT; returns None, or why the model could not be loaded."""
    sock = bind(host, port)
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    server: Optional[_Server] = None

    def failed(reason: str) -> None:
        if server is not None:
            server.should_exit = True

    model = Model(load, on_failure=failed)
    app = create_app(model, settings)
    config = uvicorn.Config(app, log_level=log_level, access_log=access_log, timeout_graceful_shutdown=None,
                            lifespan="on", server_header=False)
    server = _Server(config, f"http://{shown}:{port}", say)
    stopped: List[int] = []
    # uvicorn raises the signal that stopped it again once it has stopped: with these handlers in place
    # that ends in a return (exit code 0) instead of a kill by SIGTERM or a KeyboardInterrupt.
    previous = {sig: signal.signal(sig, lambda number, frame: stopped.append(number))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if model.error is None:
        say("stopped")
    return model.error
