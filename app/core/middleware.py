"""Pure ASGI guards that run before any route: request body size limits and URLs the database cannot hold.

They are ASGI middleware rather than dependencies because FastAPI reads (and spools) a request body before it
runs a route's dependencies: a limit must act on `receive` itself to stop a body while it streams.
"""

from __future__ import annotations

import json
from typing import Callable
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import BadRequest, DomainError, PayloadTooLarge

# Room for the multipart boundaries and part headers around an uploaded file.
MULTIPART_OVERHEAD = 64 * 1024
# A Content-Length this long is over every limit; int() of thousands of digits is slow and then refused.
_MAX_LENGTH_DIGITS = 18


async def send_error(send: Send, error: DomainError) -> None:
    """Answer with the error shape and close the connection: the rest of the body is never read, so the
    connection cannot carry another request."""
    body = json.dumps({"error": error.code, "detail": error.detail}).encode()
    await send({"type": "http.response.start", "status": error.status_code,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class _BodyCut(Exception):
    """Raised from `receive` to stop whatever is reading the body once it passes the limit."""


class BodyLimitMiddleware:
    """Refuses a request whose body is over `limit_for(method, path)` bytes with 413.

    A declared Content-Length over the limit is refused before a byte is read. A body without one (chunked) is
    counted as it arrives and cut when it passes the limit, so nothing downstream (the multipart spool included)
    ever holds more than the limit; whatever the app was answering is replaced by the 413."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str, str], tuple[int, str]]):
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The route's own path: behind a proxy prefix (root_path) "/api/v1/models" is still the upload route.
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        limit, what = self.limit_for(scope["method"], path)
        try:
            declared = _content_length(scope)
        except BadRequest as error:
            await send_error(send, error)
            return
        if declared is not None and declared > limit:
            await send_error(send, PayloadTooLarge(f"the request body is {declared} bytes; {what} accepts at most "
                                                   f"{limit} bytes"))
            return
        received, cut, started = 0, False, False
        body_pending = bool(declared) or _has_header(scope, b"transfer-encoding")

        async def counting_receive() -> Message:
            nonlocal received, cut, body_pending
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_pending = message.get("more_body", False)
                if received > limit:
                    cut = True
                    raise _BodyCut
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if cut:  # the app's answer to a body it never fully saw is replaced by the 413 below
                return
            if message["type"] == "http.response.start":
                started = True
                if body_pending:  # answered before reading the body (401, 415, 429...): close rather than drain it
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not cut:
                raise
        if cut and not started:
            await send_error(send, PayloadTooLarge(f"the request body passed {limit} bytes, the most {what} "
                                                   "accepts; it was cut off there"))


def _has_header(scope: Scope, name: bytes) -> bool:
    return any(key == name for key, _ in scope["headers"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            if not value.isdigit():
                raise BadRequest(f"Content-Length {value[:40].decode('latin-1')!r} is not a number of bytes")
            return int(value) if len(value) <= _MAX_LENGTH_DIGITS else 10 ** _MAX_LENGTH_DIGITS
    return None


class RejectNulMiddleware:
    """Refuses a URL whose path or query holds a NUL byte (raw or %00): PostgreSQL text cannot store one, and no
    id, name or parameter of this API contains one."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (b"\x00" in scope["path"].encode("utf-8", "surrogateescape")
                                        or b"\x00" in unquote_to_bytes(scope.get("query_string", b""))):
            await send_error(send, BadRequest("the URL contains a NUL byte (%00), which no id or parameter of this "
                                              "API can hold; remove it"))
            return
        await self.app(scope, receive, send)
