"""Admission control: a bounded number of requests in flight per API process, a bounded queue, and 503 beyond.

Without it, every request that arrives starts at once: hundreds of them share 40 worker threads and a small
connection pool, a request that has its connection waits for a thread (and one with a thread for a connection),
and clients time out or get a 500 from the pool while some of their jobs are created anyway.

With it, at most `api_max_in_flight` requests run; up to `api_max_queued` more wait in arrival order, each at most
`api_queue_timeout_s`. A request that finds the queue full, or waits too long, is answered 503
`{"error": "overloaded", ...}` with `Retry-After`, *before* anything of it has run, so a 503 never leaves a job
behind. The threadpool and the database pool are sized above the in-flight limit, so an admitted request never
waits for either. Health checks bypass the queue: an overloaded process is still alive.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import ErrorBody
from core.config import Settings, get_settings

EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})
# Event streams last as long as their job and wait between reads without a thread or a connection: they are
# counted apart, so a few watchers cannot take every slot from the requests that do work.
STREAM_PATH = re.compile(r"/v1/jobs/[^/]+/events")
RETRY_AFTER_S = 1
# Threads beyond the in-flight limit: for the health checks and a streamed body's last chunks.
SPARE_THREADS = 4


class Slots:
    """A counter of busy slots with a FIFO of waiters; a released slot passes straight to the next waiter."""

    def __init__(self, limit: int):
        self.limit, self.busy = limit, 0
        self.waiters: deque[asyncio.Future] = deque()

    async def acquire(self, timeout_s: float) -> bool:
        if self.busy < self.limit and not self.waiters:
            self.busy += 1
            return True
        granted = asyncio.get_running_loop().create_future()
        self.waiters.append(granted)
        try:
            async with asyncio.timeout(timeout_s):
                await granted
            return True
        except TimeoutError:
            if granted.done() and not granted.cancelled():
                return True  # the slot came just as the wait ran out: take it
            self.waiters.remove(granted)
            return False
        except BaseException:  # cancelled while waiting: hand back a slot given to us in that instant
            if granted.done() and not granted.cancelled():
                self.release()
            elif granted in self.waiters:
                self.waiters.remove(granted)
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.busy -= 1


class OverloadGuard:
    def __init__(self, app: ASGIApp, max_in_flight: int, max_queued: int, queue_timeout_s: float,
                 max_streams: int):
        self.app = app
        self.slots = Slots(max_in_flight)
        self.max_queued, self.queue_timeout_s = max_queued, queue_timeout_s
        self.max_streams, self.streams = max_streams, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            # Per event loop, so set here rather than at import.
            anyio.to_thread.current_default_thread_limiter().total_tokens = self.slots.limit + SPARE_THREADS
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if STREAM_PATH.fullmatch(scope["path"]):
            await self._stream(scope, receive, send)
            return
        if len(self.slots.waiters) >= self.max_queued and self.slots.busy >= self.slots.limit:
            await _send_overloaded(send, f"{self.slots.busy} requests in flight and {self.max_queued} waiting")
            return
        if not await self.slots.acquire(self.queue_timeout_s):
            await _send_overloaded(send, f"no slot freed within {self.queue_timeout_s:g} s")
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.release()

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.streams >= self.max_streams:
            await _send_overloaded(send, f"{self.streams} event streams open")
            return
        self.streams += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.streams -= 1


def _overloaded_body(reason: str) -> dict:
    return {"error": "overloaded", "detail": f"the service is overloaded ({reason}); nothing was done, retry "
                                             f"after {RETRY_AFTER_S} s"}


async def _send_overloaded(send: Send, reason: str) -> None:
    body = json.dumps(_overloaded_body(reason)).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(RETRY_AFTER_S).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _pool_timeout(_request: Request, _exc: PoolTimeout) -> JSONResponse:
    # Raised at checkout, before the request's first query, so nothing of it was written.
    return JSONResponse(_overloaded_body("no database connection came free in time"), 503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


def install_overload_guard(app: FastAPI, settings: Settings | None = None) -> None:
    """Call before including routers: they inherit the 503 in their OpenAPI `responses`."""
    settings = settings or get_settings()
    app.router.responses.setdefault(503, {"model": ErrorBody, "description": "overloaded: nothing was done; "
                                                                             "retry after `Retry-After` seconds"})
    app.add_middleware(OverloadGuard, max_in_flight=settings.api_max_in_flight,
                       max_queued=settings.api_max_queued, queue_timeout_s=settings.api_queue_timeout_s,
                       max_streams=settings.api_max_event_streams)
    app.add_exception_handler(PoolTimeout, _pool_timeout)
