"""Sends a finished job's webhook from the worker process (which may reach the network; a job's sandboxed process
may not), records each attempt on the job row and schedules the next try with backoff."""

from __future__ import annotations

import logging

from sqlalchemy import update

from core.config import Settings
from core.db.models import Job
from core.db.session import session_scope
from core.jobs.status import FINISHED
from core.jobs.webhooks import backoff_s, deliver
from core.queue import send_webhook

log = logging.getLogger(__name__)
FINAL_WEBHOOK_STATES = ("delivered", "failed")


def webhook_wanted(job_id: str) -> bool:
    with session_scope() as session:
        job = session.get(Job, job_id)
        return bool(job and job.status in FINISHED and job.webhook_status == "pending")


def deliver_job_webhook(job_id: str, attempt: int, settings: Settings) -> str | None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or job.status not in FINISHED or not (job.spec or {}).get("webhook"):
            return None
        if (job.webhook_status or "").startswith(FINAL_WEBHOOK_STATES):
            return job.webhook_status  # a duplicate message: the outcome is already known
        session.expunge(job)
    hook = job.spec["webhook"]
    result = deliver(job, hook["url"], hook["secret"], attempt, settings.webhook_allow_private_addresses)
    status = result.status
    retry = result.retry and attempt < settings.webhook_max_attempts
    if result.retry and not retry:
        status = f"failed after {attempt} attempts: {status.removeprefix('retrying: ')}"
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(webhook_status=status[:300],
                                                                   webhook_attempts=attempt))
    log.info("job %s webhook attempt %d: %s", job_id, attempt, status)
    if retry:
        send_webhook(job_id, attempt + 1, countdown=backoff_s(attempt))
    return status
