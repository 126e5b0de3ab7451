"""`GET /v1/jobs/{id}/events`: a job's life as server-sent events, for the CLI's `wait` and the dashboard.

The stream reads the job (and its new log lines) every `events_poll_interval_s` in one short session from a
worker thread and sends what changed; between two reads it holds no database connection, no thread and no
request slot (app/core/overload.py counts streams apart, up to `api_max_event_streams` per process).

Events (each `data` is JSON):
- `status`: {"status", "attempts", "started_at", "finished_at", "progress"} when the status changes;
- `progress`: the job's progress ({"stage", "phase", "step", "total", "fraction", "overall", "metrics"});
- `metrics`: the job's metrics, once they are there;
- `log`: one line of the job's log ({"seq", "at", "level", "source", "message"});
- `end`: the whole job (as `GET /v1/jobs/{id}`) once it has finished; the stream ends after it.
Every event's `id` is the seq of the last log line sent: reconnecting with `Last-Event-ID` resumes the log after
it (status and progress are sent again as they are then).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, AsyncIterator

import anyio.to_thread
from fastapi import APIRouter, Header
from fastapi.responses import StreamingResponse

from app.auth.dependencies import TenantDep
from app.core.errors import BadRequest, InternalError, InvalidInput, NotFound, Unauthorized, responses
from app.jobs.logs import MAX_SEQ, Snapshot, snapshot
from app.jobs.router import job_out
from core.config import get_settings
from core.db.models import Tenant
from core.jobs.status import FINISHED

router = APIRouter(prefix="/v1", tags=["jobs"], responses=responses(BadRequest, Unauthorized, InvalidInput,
                                                                    InternalError))
LINES_PER_READ = 500
KEEPALIVE_S = 15.0
EVENTS_DOC = __doc__.split("\n\n", 2)[2]


def _event(kind: str, data, event_id: int) -> bytes:
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def _resume_point(last_event_id: str | None) -> int:
    if last_event_id is None:
        return 0
    if not last_event_id.strip().isdigit() or int(last_event_id) > MAX_SEQ:
        raise InvalidInput(f"Last-Event-ID must be the id of an event of this stream (a number), not "
                           f"{last_event_id[:40]!r}")
    return int(last_event_id)


async def _read(tenant: Tenant, job_id: str, after: int) -> Snapshot:
    return await anyio.to_thread.run_sync(snapshot, tenant, job_id, after, LINES_PER_READ)


async def _stream(tenant: Tenant, job_id: str, first: Snapshot, after: int) -> AsyncIterator[bytes]:
    interval = get_settings().events_poll_interval_s
    sent: dict[str, object] = {}
    current, last_output, finished_seen = first, time.monotonic(), False
    while True:
        job = job_out(current.job).model_dump(mode="json")
        # The status event carries the progress of the same read: a client never shows a new status with the
        # previous one's progress.
        status = {k: job[k] for k in ("status", "attempts", "started_at", "finished_at")}
        changes = [("status", status),
                   ("progress", job["progress"]), ("metrics", job["metrics"])]
        for kind, data in changes:
            if data and sent.get(kind) != data:
                sent[kind] = data
                last_output = time.monotonic()
                yield _event(kind, {**data, "progress": job["progress"]} if kind == "status" else data, after)
        for line in current.lines:
            after = line.seq
            last_output = time.monotonic()
            yield _event("log", line.model_dump(mode="json"), after)
        if job["status"] in FINISHED and len(current.lines) < LINES_PER_READ:
            # The worker writes the job's last log lines just after its final status: read once more for them.
            if finished_seen:
                yield _event("end", job, after)
                return
            finished_seen = True
        if time.monotonic() - last_output >= KEEPALIVE_S:
            last_output = time.monotonic()
            yield b": keep-alive\n\n"  # a comment: keeps proxies from closing an idle stream
        await anyio.sleep(interval)
        try:
            current = await _read(tenant, job_id, after)
        except NotFound:  # deleted while watched: nothing more will come
            return


@router.get("/jobs/{job_id}/events", description=EVENTS_DOC, responses={**responses(NotFound), 200: {
    "description": "A stream of server-sent events (`text/event-stream`).",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}}, response_class=StreamingResponse)
async def job_events(tenant: TenantDep, job_id: str,
                     last_event_id: Annotated[str | None, Header(description="Resume after this event's id.")]
                     = None) -> StreamingResponse:
    after = _resume_point(last_event_id)
    first = await _read(tenant, job_id, after)  # 404 before the stream starts
    return StreamingResponse(_stream(tenant, job_id, first, after), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

