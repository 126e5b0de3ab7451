"""Reading a job's server-sent events (`GET /v1/jobs/{id}/events`), reconnecting where a connection drops."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterable, Iterator

import httpx


@dataclass(frozen=True)
class Event:
    kind: str  # status, progress, metrics, log or end; keepalive for the server's idle-stream comments
    data: dict
    id: str | None


def parse(lines: Iterable[str]) -> Iterator[Event]:
    """Events from the lines of a `text/event-stream` body (multi-line data joined). A comment becomes a
    `keepalive` event, so a reader waiting with a deadline gets control back while nothing changes."""
    kind, data, event_id = "message", [], None
    for line in lines:
        if not line:
            if data:
                yield Event(kind, json.loads("\n".join(data)), event_id)
            kind, data = "message", []
            continue
        if line.startswith(":"):
            yield Event("keepalive", {}, None)
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


# (connect, read, write, pool) seconds: a tuple, not an httpx.Timeout, so that clients of httpx's successor
# httpx2 (starlette's TestClient, which the SDK may be handed) take it too; 2.17 refuses another library's Timeout.
STREAM_TIMEOUT_S = (30.0, 120.0, 30.0, 30.0)


def follow(http: httpx.Client, job_id: str, check, reconnects: int = 5) -> Iterator[Event]:
    """The job's events until its `end` event. A dropped connection is resumed after the last event seen (up to
    `reconnects` times in a row); `check(response)` raises the SDK's error for an error response."""
    last_id, failures = None, 0
    while True:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with http.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                             timeout=STREAM_TIMEOUT_S) as response:
                check(response)
                for event in parse(response.iter_lines()):
                    failures, last_id = 0, event.id or last_id
                    yield event
                    if event.kind == "end":
                        return
            dropped: Exception = httpx.RemoteProtocolError("the event stream ended before the job did")
        except (httpx.TransportError, json.JSONDecodeError) as exc:
            dropped = exc
        failures += 1
        if failures > reconnects:
            raise dropped
