"""Housekeeping every worker runs periodically: lost jobs, consumed broker messages, orphaned checkpoints."""

from __future__ import annotations

import logging

from sqlalchemy import select

from app.config import Settings
from app.db.models import Job, JobCheckpoint
from app.db.session import session_scope
from app.jobs.schemas import FINISHED
from worker.broker import purge_consumed_messages
from worker.claims import requeue_lost_jobs
from worker.storage import delete_checkpoints

log = logging.getLogger(__name__)


def delete_finished_checkpoints() -> int:
    """Checkpoints of finished jobs: a worker deletes them when it records the outcome, but a job cancelled
    while queued again after its worker died never reaches a worker."""
    with session_scope() as session:
        job_ids = session.scalars(select(JobCheckpoint.job_id).join(Job, Job.id == JobCheckpoint.job_id)
                                  .where(Job.status.in_(FINISHED)).distinct()).all()
        for job_id in job_ids:
            delete_checkpoints(session, job_id)
    return len(job_ids)


def reap(settings: Settings) -> None:
    for task in (lambda: requeue_lost_jobs(settings), purge_consumed_messages, delete_finished_checkpoints):
        try:
            task()
        except Exception:  # a database or broker hiccup must not stop the others; they retry next round
            log.exception("housekeeping step failed")
