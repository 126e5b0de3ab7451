"""Per-tenant quotas: bytes stored (models, datasets and artifacts) and active (queued or running) jobs."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.errors import QuotaExceeded
from core.config import Settings
from core.db.models import Artifact, Dataset, Job, Model, Tenant
from core.jobs.status import ACTIVE


def stored_bytes(session: Session, tenant: Tenant) -> int:
    return sum(session.scalar(select(func.coalesce(func.sum(kind.size_bytes), 0))
                              .where(kind.tenant_id == tenant.id)) for kind in (Model, Dataset, Artifact))


def lock_tenant(session: Session, tenant: Tenant) -> None:
    """Serialise this tenant's quota checks until the transaction ends, so two concurrent requests cannot both
    take the last of a quota (PostgreSQL row lock; SQLite already serialises writers). FOR NO KEY UPDATE: rows
    that merely reference the tenant (the worker's artifacts) are not held up by it."""
    session.execute(select(Tenant.id).where(Tenant.id == tenant.id).with_for_update(key_share=True))


def check_storage(session: Session, tenant: Tenant, incoming: int, settings: Settings) -> None:
    """Refuse storing `incoming` more bytes when that would pass the tenant's stored-bytes quota."""
    used, quota = stored_bytes(session, tenant), settings.quota_stored_bytes
    if used + incoming > quota:
        raise QuotaExceeded(f"storage quota exceeded: you store {used:,} bytes (models, datasets and job "
                            f"artifacts) of your {quota:,}-byte quota, and this upload needs {incoming:,} more. "
                            "Delete models or datasets you no longer need (DELETE /v1/models/{id}, "
                            "/v1/datasets/{id}) or ask the operator for a larger quota")


def check_job_quota(session: Session, tenant: Tenant, settings: Settings) -> None:
    """Refuse a new job while the tenant has its quota of active jobs, or no storage left for artifacts."""
    lock_tenant(session, tenant)
    active = session.scalar(select(func.count()).where(Job.tenant_id == tenant.id, Job.status.in_(ACTIVE)))
    if active >= settings.quota_active_jobs:
        raise QuotaExceeded(f"active job quota reached: you have {active} queued or running jobs and the limit is "
                            f"{settings.quota_active_jobs}. Retry when one has finished, or cancel one "
                            "(POST /v1/jobs/{id}/cancel)",
                            headers={"Retry-After": str(settings.quota_retry_after_s)})
    used, quota = stored_bytes(session, tenant), settings.quota_stored_bytes
    if used >= quota:
        raise QuotaExceeded(f"storage quota exceeded: you store {used:,} bytes of your {quota:,}-byte quota and a "
                            "job writes artifacts. Delete models or datasets you no longer need, or ask the "
                            "operator for a larger quota")
