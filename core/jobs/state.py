"""Every change of a job's state, in one place: claim, heartbeat, progress, cancel, finish and re-queue.

A job moves queued -> running -> succeeded | failed | cancelled. Each transition is one conditional UPDATE, so
the API, any number of workers and their reapers can race without a job running twice or finishing twice:
- a message can arrive twice (Redis redelivers unacked messages; the reaper re-sends lost ones), so running a
  job starts with an atomic claim: only a queued job, or a running one whose heartbeat went stale, can be claimed;
  a claim also removes whatever an earlier attempt stored, so a job never mixes two attempts' artifacts;
- only the worker that holds the claim can finish the job (`mark_finished`), in the transaction that also writes
  its artifacts.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from core.broker import waiting_job_ids
from core.config import Settings
from core.db.models import Job, utcnow
from core.db.session import session_scope
from core.jobs.artifacts import delete_artifacts
from core.jobs.status import JobStatus
from core.queue import QUEUES, enqueue_job
from core.workers import live_workers

log = logging.getLogger(__name__)
QUEUED_PROGRESS = {"phase": "queued"}


def _stale(settings: Settings):
    cutoff = utcnow() - timedelta(seconds=settings.stale_after_s)
    return and_(Job.status == JobStatus.RUNNING, or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))


def claim(job_id: str, worker: str, settings: Settings, versions: dict) -> bool:
    now = utcnow()
    with session_scope() as session:
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.cancel_requested.is_(False),
                   or_(Job.status == JobStatus.QUEUED, _stale(settings)))
            .values(status=JobStatus.RUNNING, worker=worker, heartbeat_at=now, attempts=Job.attempts + 1,
                    started_at=func.coalesce(Job.started_at, now), versions=versions,
                    progress={"phase": "starting"}, waiting_reason=None)
        ).rowcount == 1
        if claimed:
            delete_artifacts(session, job_id)
    return claimed


def beat(job_id: str, worker: str) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id, Job.worker == worker, Job.status == JobStatus.RUNNING)
                        .values(heartbeat_at=utcnow()))


def write_progress(job_id: str, progress: dict) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(progress=progress))


def cancel_requested(job_id: str) -> bool:
    with session_scope() as session:
        return bool(session.scalar(select(Job.cancel_requested).where(Job.id == job_id)))


def request_cancel(session: Session, job_id: str) -> None:
    """A queued job is cancelled at once; a running one is flagged and stops at the method's next step."""
    # Conditional updates, because a worker may claim the job between a read and this write.
    session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED).values(
        status=JobStatus.CANCELLED, finished_at=utcnow(), error_code="cancelled",
        error_message="cancelled by the user before it started"))


def mark_finished(session: Session, job_id: str, worker: str, status: JobStatus, code: str | None,
                  message: str | None, metrics: dict | None) -> bool:
    """Set the final status if `worker` still owns the running job; False (nothing written) otherwise.

    Call it first in the transaction that stores the outcome: the guarded update takes the row's lock, so a
    reclaim waits for that commit."""
    values = {"status": status, "error_code": code, "error_message": message, "finished_at": utcnow()}
    if metrics is not None:
        values["metrics"] = metrics
    if status == JobStatus.SUCCEEDED:
        values["progress"] = {"phase": "done", "step": 1, "total": 1, "fraction": 1.0, "overall": 1.0}
    return session.execute(update(Job).where(Job.id == job_id, Job.worker == worker,
                                             Job.status == JobStatus.RUNNING).values(**values)).rowcount == 1


def park(job_id: str, reason: str) -> bool:
    """Leave a queued job without a message, with the reason it waits: a worker that received it cannot run it
    (too little memory). `requeue_lost_jobs` sends it again once a live worker of its queue fits it."""
    with session_scope() as session:
        return session.execute(update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED).values(
            enqueued_at=None, waiting_reason=reason)).rowcount == 1


def requeue_lost_jobs(settings: Settings, queued_grace_s: float | None = None,
                      queues: tuple[str, ...] = QUEUES) -> list[str]:
    """Re-send jobs whose worker died (stale heartbeat), queued jobs whose message was lost, and parked jobs
    (`park`) once a worker that fits them is live; returns their ids.

    A job whose worker died goes back to `queued` and is re-sent at once: the embedded broker (kombu's SQLAlchemy
    transport) hides a fetched message until it is acked and never restores it if the worker is killed, and Redis
    restores it only after its visibility timeout (hours). A queued job is re-sent only when it has waited
    `queued_grace_s` (default: the `lost_queued_after_s` setting) and the broker holds no message for it in any
    queue: a job waiting behind busy workers still has its message there, so a backlog is not re-sent (and
    doubled) merely for being long. Each re-send moves `enqueued_at` under a condition, so when several workers'
    reapers race, one of them sends.
    """
    grace = settings.lost_queued_after_s if queued_grace_s is None else queued_grace_s
    now = utcnow()
    old = now - timedelta(seconds=grace)
    with session_scope() as session:
        stale = session.scalars(select(Job.id).where(_stale(settings))).all()
        queued = session.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED, Job.enqueued_at < old)).all()
        parked = session.execute(select(Job.id, Job.queue, Job.memory_bytes).where(
            Job.status == JobStatus.QUEUED, Job.enqueued_at.is_(None))).all()
        workers = live_workers(session, settings) if parked else []
    waiting = waiting_job_ids(queues) if queued else set()
    lost = [job_id for job_id in queued if waiting is None or job_id not in waiting]
    runnable = [job_id for job_id, queue, memory in parked
                if any(queue in worker.queues and worker.fits(memory) for worker in workers)]
    resend = []
    with session_scope() as session:
        for job_id in stale:
            if session.execute(update(Job).where(Job.id == job_id, _stale(settings)).values(
                    status=JobStatus.QUEUED, worker=None, heartbeat_at=None, enqueued_at=now,
                    progress=QUEUED_PROGRESS)).rowcount:
                resend.append(job_id)
        for job_id in lost:
            if session.execute(update(Job).where(
                    Job.id == job_id, Job.status == JobStatus.QUEUED, Job.enqueued_at < old).values(
                    enqueued_at=now)).rowcount:
                resend.append(job_id)
        for job_id in runnable:
            if session.execute(update(Job).where(
                    Job.id == job_id, Job.status == JobStatus.QUEUED, Job.enqueued_at.is_(None)).values(
                    enqueued_at=now)).rowcount:
                resend.append(job_id)
        sends = {row.id: row for row in session.execute(
            select(Job.id, Job.time_limit_s, Job.queue, Job.priority).where(Job.id.in_(resend))).all()}
    for job_id in resend:
        log.warning("re-queueing job %s (worker lost, message lost, or a worker that fits it is live)", job_id)
        enqueue_job(job_id, sends[job_id].time_limit_s, sends[job_id].queue, sends[job_id].priority)
    return resend
