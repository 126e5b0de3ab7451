"""A lean asyncio HTTP/1.1 load generator: closed loops of N concurrent clients, or an open loop at a fixed rate.

httpx spent twice the server's CPU per request here, and on 2 shared cores the load generator's CPU is taken from
the server it measures; this client writes prepared requests on keep-alive connections and reads status,
Content-Length and body, nothing more (about a tenth of httpx's cost).

Every request is classified as ok (2xx), overload (503), server error (other 5xx), timeout (no answer within the
client's timeout) or other (4xx, connection refused or reset). In the open loop latency counts from the request's
scheduled start, so a server that falls behind the rate shows it in the tail (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

KINDS = ("ok", "server_error", "overload", "timeout", "other")


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    body: bytes = b""
    content_type: str = "application/json"


Plan = Callable[[int], Call]  # the index-th request of a level


@dataclass
class Answer:
    status: int
    body: bytes


@dataclass
class LevelResult:
    name: str
    concurrency: int
    requests: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    load_average: float = 0.0
    other_examples: list[str] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    def summary(self) -> dict:
        return {"level": self.name, "concurrency": self.concurrency, "requests": self.requests, **self.counts,
                "throughput_rps": self.requests / self.wall_s if self.wall_s else 0.0,
                "p50_ms": self.percentile(50), "p95_ms": self.percentile(95), "p99_ms": self.percentile(99),
                "wall_s": self.wall_s, "load_average_1m": self.load_average,
                "other_examples": self.other_examples[:5]}


class Connection:
    """One keep-alive connection; reconnects when the server closed it."""

    def __init__(self, host: str, port: int, headers: dict[str, str]):
        self.host, self.port = host, port
        self.fixed_headers = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, call: Call) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{call.method} {call.path} HTTP/1.1\r\n{self.fixed_headers}"
        if call.body:
            head += f"Content-Type: {call.content_type}\r\nContent-Length: {len(call.body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + call.body)
        header_block = await self.reader.readuntil(b"\r\n\r\n")
        status = int(header_block[9:12])
        length, close = 0, False
        for line in header_block.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise ValueError("chunked responses are not supported by this load generator")
        body = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return Answer(status, body)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _classify(status: int) -> str:
    if status < 300:
        return "ok"
    if status == 503:
        return "overload"
    return "server_error" if status >= 500 else "other"


async def _one(connection: Connection, call: Call, result: LevelResult, started: float, timeout_s: float,
               keep: bool) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            answer = await connection.send(call)
        kind = _classify(answer.status)
        if keep:
            result.answers.append(answer)
        if kind == "other":
            result.other_examples.append(f"{answer.status} {answer.body[:120]!r}")
    except TimeoutError:
        kind = "timeout"
        connection.close()
    except (OSError, asyncio.IncompleteReadError, ValueError) as error:
        kind = "other"
        result.other_examples.append(f"{type(error).__name__}: {error}")
        connection.close()
    result.requests += 1
    result.counts[kind] += 1
    if kind != "timeout":
        result.latencies_ms.append((time.perf_counter() - started) * 1000)


def _address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    return parts.hostname, parts.port or 80


async def closed_loop(name: str, base_url: str, headers: dict, plan: Plan, concurrency: int, total: int,
                      timeout_s: float, keep_answers: bool = False) -> LevelResult:
    """`concurrency` clients, each on its own connection, sending its next request once the last is answered."""
    result = LevelResult(name, concurrency)
    indices = iter(range(total))
    host, port = _address(base_url)

    async def user() -> None:
        connection = Connection(host, port, headers)
        try:
            for index in indices:
                await _one(connection, plan(index), result, time.perf_counter(), timeout_s, keep_answers)
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(user() for _ in range(concurrency)))
    result.wall_s = time.perf_counter() - started
    result.load_average = os.getloadavg()[0]
    return result


async def open_loop(name: str, base_url: str, headers: dict, plan: Plan, rate: float, total: int,
                    timeout_s: float) -> LevelResult:
    """`total` requests started at a fixed `rate` per second, whatever the answers' pace; a request takes an
    idle connection or opens one."""
    result = LevelResult(name, 0)
    host, port = _address(base_url)
    idle: list[Connection] = []
    opened: set[Connection] = set()

    async def scheduled_call(index: int, scheduled: float) -> None:
        connection = idle.pop() if idle else Connection(host, port, headers)
        opened.add(connection)
        await _one(connection, plan(index), result, scheduled, timeout_s, False)
        idle.append(connection)

    started = time.perf_counter()
    tasks = []
    for index in range(total):
        scheduled = started + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(scheduled_call(index, scheduled)))
    await asyncio.gather(*tasks)
    result.wall_s = time.perf_counter() - started
    result.concurrency = len(opened)
    result.load_average = os.getloadavg()[0]
    for connection in opened:
        connection.close()
    return result
