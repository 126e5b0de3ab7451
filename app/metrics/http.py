"""Requests and their latency, labelled by route template (not raw path: ids would explode the label set).

`modelpress api` runs several uvicorn processes; it points PROMETHEUS_MULTIPROC_DIR at a directory it empties at
start, so every process's counts reach the scrape whichever process answers it. Without that variable (tests, one
process) the default in-process registry is used."""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("modelpress_http_requests_total", "HTTP requests answered.", ["method", "route", "status"])
LATENCY = Histogram("modelpress_http_request_duration_seconds", "Time to the response's first byte.",
                    ["method", "route"], buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_count(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                LATENCY.labels(scope["method"], _route(scope)).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            REQUESTS.labels(scope["method"], _route(scope), str(status["code"])).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
