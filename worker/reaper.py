"""Housekeeping every worker runs periodically: lost jobs, consumed broker messages, orphaned checkpoints and
scratch directories."""

from __future__ import annotations

import logging
import shutil

from sqlalchemy import select

from core.broker import purge_consumed_messages
from core.config import Settings
from core.db.models import Job, JobCheckpoint
from core.db.session import session_scope
from core.jobs.artifacts import delete_checkpoints
from core.jobs.state import requeue_lost_jobs
from core.jobs.status import FINISHED, JobStatus
from worker.scratch import old_scratch_dirs

log = logging.getLogger(__name__)
# A scratch directory this old whose job is not running was left by a killed worker.
ABANDONED_SCRATCH_AGE_S = 600


def delete_finished_checkpoints() -> int:
    """Checkpoints of finished jobs: a worker deletes them when it records the outcome, but a job cancelled
    while queued again after its worker died never reaches a worker."""
    with session_scope() as session:
        job_ids = session.scalars(select(JobCheckpoint.job_id).join(Job, Job.id == JobCheckpoint.job_id)
                                  .where(Job.status.in_(FINISHED)).distinct()).all()
        for job_id in job_ids:
            delete_checkpoints(session, job_id)
    return len(job_ids)


def remove_abandoned_scratch(settings: Settings, min_age_s: float = ABANDONED_SCRATCH_AGE_S) -> int:
    """Scratch directories of jobs that are not running. Only jobs this service knows are considered: another
    service on the same machine may share the scratch root."""
    found = old_scratch_dirs(settings, min_age_s)
    abandoned = found.pop("probe", [])  # a probe lasts seconds
    if found:
        with session_scope() as session:
            idle = session.scalars(select(Job.id).where(Job.id.in_(list(found)), Job.status != JobStatus.RUNNING)).all()
        abandoned += [path for job_id in idle for path in found[job_id]]
    for path in abandoned:
        shutil.rmtree(path, ignore_errors=True)
    return len(abandoned)


def reap(settings: Settings) -> None:
    for task in (lambda: requeue_lost_jobs(settings), purge_consumed_messages, delete_finished_checkpoints,
                 lambda: remove_abandoned_scratch(settings)):
        try:
            task()
        except Exception:  # a database or broker hiccup must not stop the others; they retry next round
            log.exception("housekeeping step failed")
