"""Deleting everything a tenant owns (its API keys and the tenant itself stay, so it can go on using the
service)."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from core.db.models import Dataset, IdempotencyRecord, Job, Model, Tenant, UploadSession
from core.db.session import after_commit
from core.jobs.artifacts import delete_job
from core.jobs.state import request_cancel
from core.jobs.status import JobStatus
from core.store import get_store
from core.store.base import upload_prefix
from core.store.lifecycle import delete_tenant_blobs


def running_jobs_after_cancel(session: Session, tenant: Tenant) -> int:
    """Cancel the tenant's queued jobs and ask its running ones to stop; how many still run."""
    for job_id in session.scalars(select(Job.id).where(Job.tenant_id == tenant.id,
                                                       Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))):
        request_cancel(session, job_id)
    running = session.scalar(select(func.count()).where(Job.tenant_id == tenant.id,
                                                        Job.status == JobStatus.RUNNING))
    return running


def delete_tenant_data(session: Session, tenant: Tenant) -> dict[str, int]:
    """Delete jobs, artifacts, checkpoints, models, datasets, uploads and idempotency records, and their objects.
    Call only when no job of the tenant runs."""
    counts = {"jobs": 0, "models": 0, "datasets": 0, "uploads": 0}
    for job in session.scalars(select(Job).where(Job.tenant_id == tenant.id)).all():
        delete_job(session, job)
        counts["jobs"] += 1
    uploads = session.execute(select(UploadSession.id).where(UploadSession.tenant_id == tenant.id)).scalars().all()
    for kind, name in ((Model, "models"), (Dataset, "datasets"), (UploadSession, "uploads")):
        counts[name] = session.execute(delete(kind).where(kind.tenant_id == tenant.id)).rowcount
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.tenant_id == tenant.id))
    delete_tenant_blobs(session, tenant.id)
    prefixes = [upload_prefix(tenant.id, upload_id) for upload_id in uploads]
    after_commit(session, lambda: [get_store().delete_prefix(prefix) for prefix in prefixes])
    return counts
