"""Which worker runs a job, and recovery of jobs whose worker or message was lost.

A message can arrive twice (Redis redelivers unacked messages; the reaper re-sends lost ones), so running a job
starts with an atomic claim: only a queued job, or a running one whose heartbeat went stale, can be claimed. A
claim also removes whatever an earlier attempt may have stored, so a job never mixes two attempts' artifacts.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, func, or_, select, update

from app.config import Settings
from app.db.models import Job, utcnow
from app.db.session import session_scope
from app.queue import QUEUE, enqueue_job
from worker.broker import waiting_job_ids
from worker.storage import delete_artifacts

log = logging.getLogger(__name__)


def _stale(settings: Settings):
    cutoff = utcnow() - timedelta(seconds=settings.stale_after_s)
    return and_(Job.status == "running", or_(Job.heartbeat_at.is_(None), Job.heartbeat_at < cutoff))


def claim(job_id: str, worker: str, settings: Settings, versions: dict) -> bool:
    now = utcnow()
    with session_scope() as session:
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.cancel_requested.is_(False),
                   or_(Job.status == "queued", _stale(settings)))
            .values(status="running", worker=worker, heartbeat_at=now, attempts=Job.attempts + 1,
                    started_at=func.coalesce(Job.started_at, now), versions=versions,
                    progress={"phase": "starting"})
        ).rowcount == 1
        if claimed:
            delete_artifacts(session, job_id)
    return claimed


def beat(job_id: str, worker: str) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id, Job.worker == worker, Job.status == "running")
                        .values(heartbeat_at=utcnow()))


def requeue_lost_jobs(settings: Settings, queued_grace_s: float = 600, queue: str = QUEUE) -> list[str]:
    """Re-send jobs whose worker died (stale heartbeat) and queued jobs whose message was lost; returns their ids.

    A job whose worker died goes back to `queued` and is re-sent at once: the embedded broker (kombu's SQLAlchemy
    transport) hides a fetched message until it is acked and never restores it if the worker is killed, and Redis
    restores it only after its visibility timeout (hours). A queued job is re-sent only when it has waited
    `queued_grace_s` and the broker holds no message for it in `queue`: a job waiting behind busy workers still
    has its message there, so a backlog is not re-sent (and doubled) merely for being long. Each re-send moves
    `enqueued_at` under a condition, so when several workers' reapers race, one of them sends.
    """
    now = utcnow()
    old = now - timedelta(seconds=queued_grace_s)
    with session_scope() as session:
        stale = session.scalars(select(Job.id).where(_stale(settings))).all()
        queued = session.scalars(select(Job.id).where(
            Job.status == "queued", or_(Job.enqueued_at.is_(None), Job.enqueued_at < old))).all()
    waiting = waiting_job_ids(queue) if queued else set()
    lost = [job_id for job_id in queued if waiting is None or job_id not in waiting]
    resend = []
    with session_scope() as session:
        for job_id in stale:
            if session.execute(update(Job).where(Job.id == job_id, _stale(settings)).values(
                    status="queued", worker=None, heartbeat_at=None, enqueued_at=now,
                    progress={"phase": "queued"})).rowcount:
                resend.append(job_id)
        for job_id in lost:
            if session.execute(update(Job).where(
                    Job.id == job_id, Job.status == "queued",
                    or_(Job.enqueued_at.is_(None), Job.enqueued_at < old)).values(enqueued_at=now)).rowcount:
                resend.append(job_id)
        limits = dict(session.execute(select(Job.id, Job.time_limit_s).where(Job.id.in_(resend))).all())
    for job_id in resend:
        log.warning("re-queueing job %s (worker lost or message lost)", job_id)
        enqueue_job(job_id, limits[job_id])
    return resend
