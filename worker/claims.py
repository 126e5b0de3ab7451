"""Which worker runs a job, and recovery of jobs whose worker died.

A message can arrive twice (Redis redelivers unacked messages; the reaper re-sends lost ones), so running a job
starts with an atomic claim: only a queued job, or a running one whose heartbeat went stale, can be claimed.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import and_, func, or_, select, update

from app.config import Settings
from app.db.models import Job, utcnow
from app.db.session import session_scope
from app.queue import enqueue_job

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
    return claimed


def beat(job_id: str, worker: str) -> None:
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id, Job.worker == worker, Job.status == "running")
                        .values(heartbeat_at=utcnow()))


def requeue_lost_jobs(settings: Settings, queued_grace_s: float = 600) -> list[str]:
    """Re-send jobs whose worker died (stale heartbeat) and queued jobs whose message may have been lost.

    The embedded broker (kombu's SQLAlchemy transport) hides a fetched message until it is acked and never
    restores it if the worker is killed, so acks_late alone cannot save the job there; this can."""
    old = utcnow() - timedelta(seconds=queued_grace_s)
    with session_scope() as session:
        jobs = session.scalars(select(Job).where(or_(_stale(settings),
                                                     and_(Job.status == "queued", Job.enqueued_at < old)))).all()
        for job in jobs:
            job.enqueued_at = utcnow()
        found = [(job.id, job.time_limit_s) for job in jobs]
    for job_id, time_limit in found:
        log.warning("re-queueing job %s (worker lost or message lost)", job_id)
        enqueue_job(job_id, time_limit)
    return [job_id for job_id, _ in found]
