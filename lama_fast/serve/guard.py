"""The checks every request passes before a route sees it: the API key, the body's size, and the
request's count and time for /metrics.

A plain ASGI middleware, so that a body over the limit is refused from its Content-Length before a
byte of it is read, and a body without one (chunked) is cut off at the limit while it arrives.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Awaitable, Callable, Dict, Iterable, Optional

Scope = Dict[str, Any]
Message = Dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes that need the key when one is set; the page, its files, /healthz and the API docs do not.
PROTECTED_PREFIXES = ("/v1/", "/api/", "/metrics")


class BodyTooLarge(Exception):
    """A request body grew past the limit while it was read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than this server's limit of {limit} bytes "
                         f"({limit / 2 ** 20:.3g} MiB)")


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _given_key(headers: Iterable[tuple]) -> Optional[str]:
    """The key of an ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` header."""
    for name, value in headers:
        name = name.lower()
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
        elif name == b"x-api-key":
            return value.decode("latin-1").strip()
    return None


async def send_json(send: Send, status: int, detail: str, headers: Optional[Dict[str, str]] = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """Key, body size and metrics around ``app``; ``metrics.observe(route, status, seconds)`` is told of
    every request, and ``route_of(path)`` names a path's route for it."""

    def __init__(self, app: ASGIApp, max_body: int, api_key: Optional[str], metrics: Any,
                 route_of: Callable[[str], str]) -> None:
        self.app = app
        self.max_body = max_body
        self._key_digest = key_digest(api_key) if api_key is not None else None
        self.metrics = metrics
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, sending)
        finally:
            self.metrics.observe(self.route_of(scope.get("path", "")), status["code"], time.perf_counter() - start)

    def _authorised(self, scope: Scope) -> bool:
        if self._key_digest is None or not scope.get("path", "").startswith(PROTECTED_PREFIXES):
            return True
        given = _given_key(scope.get("headers", ()))
        # Digests of equal length, compared in constant time: neither the key nor its length leaks.
        return given is not None and hmac.compare_digest(key_digest(given), self._key_digest)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._authorised(scope):
            await send_json(send, 401, "missing or wrong API key: send it as 'Authorization: Bearer KEY' "
                                       "or 'X-API-Key: KEY'", {"WWW-Authenticate": "Bearer"})
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await send_json(send, 413, str(BodyTooLarge(self.max_body)))
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> Optional[int]:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
