"""Keeping the store and its rows in step: expired uploads, job retention, and objects or rows that lost their
other half (a crash between a write and its commit, a failed delete).

`find_orphans` is the check (`modelpress store check`: all counts 0 on a consistent store); `run` is the
periodic task each worker's reaper runs every MODELPRESS_STORE_SWEEP_INTERVAL_S."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Blob, Job, UploadSession, utcnow
from core.db.session import session_scope
from core.jobs.artifacts import delete_job
from core.jobs.status import FINISHED
from core.store import get_store
from core.store.base import tenant_prefix, upload_prefix
from core.store.blobs import BLOB_USERS, key_of, lock_blob, release_blobs

log = logging.getLogger(__name__)


@dataclass
class Orphans:
    objects: list[str] = field(default_factory=list)  # store objects no row accounts for
    rows: list[str] = field(default_factory=list)  # blob rows whose object is missing
    unused: list[str] = field(default_factory=list)  # blob rows no model, dataset, artifact or checkpoint uses

    def counts(self) -> dict[str, int]:
        return {"objects_without_rows": len(self.objects), "rows_without_objects": len(self.rows),
                "unused_blob_rows": len(self.unused)}


def find_orphans(min_age_s: float = 0, tenant_id: str | None = None) -> Orphans:
    """Compare the store with the rows (of one tenant, or all). Objects younger than `min_age_s` may belong to a
    write in progress and are left out."""
    store, cutoff = get_store(), utcnow() - timedelta(seconds=min_age_s)
    objects = {stored.key: stored for stored in store.list(tenant_prefix(tenant_id) if tenant_id else "tenants/")}

    def mine(query, table):
        return query.where(table.tenant_id == tenant_id) if tenant_id else query

    with session_scope() as session:
        blobs = {key_of(blob): blob.id for blob in session.scalars(mine(select(Blob), Blob))}
        used = set()
        for user in BLOB_USERS:
            used |= set(session.scalars(select(user.blob_id).distinct()))
        open_uploads = {upload_prefix(tenant, upload_id) for upload_id, tenant in session.execute(mine(
            select(UploadSession.id, UploadSession.tenant_id).where(UploadSession.result_id.is_(None)),
            UploadSession))}
        old_blobs = set(session.scalars(select(Blob.id).where(Blob.created_at < cutoff)))
    orphans = Orphans()
    for key, stored in sorted(objects.items()):
        if stored.modified_at >= cutoff or key in blobs:
            continue
        if key.rsplit("/", 1)[0] + "/" in open_uploads:
            continue
        orphans.objects.append(key)
    orphans.rows = _without_objects(sorted(blob_id for key, blob_id in blobs.items() if key not in objects))
    orphans.unused = sorted(blob_id for blob_id in blobs.values() if blob_id not in used and blob_id in old_blobs)
    return orphans


def _without_objects(blob_ids: list[str]) -> list[str]:
    """The rows among `blob_ids` whose object is missing while the row's lock is held. The listing and the rows
    are read at different moments: a write that stores its object after the listing and commits its row before
    the rows are read looks like a row without its object. Under the lock, such a write has committed, and its
    object is there. (A delete commits the row's removal before it removes the object, so it can only look like
    an object without a row, which `min_age_s` covers.)"""
    store, missing = get_store(), []
    with session_scope() as session:
        for blob_id in blob_ids:
            if lock_blob(session, blob_id) and not store.exists(key_of(session.get(Blob, blob_id))):
                missing.append(blob_id)
        session.rollback()  # the locks only
    return missing


def expire_uploads() -> int:
    """Delete resumable uploads past their expiry with their parts (and the rows of completed ones)."""
    with session_scope() as session:
        expired = session.execute(select(UploadSession.id, UploadSession.tenant_id).where(
            UploadSession.expires_at < utcnow())).all()
        for upload_id, _ in expired:
            session.delete(session.get(UploadSession, upload_id))
    for upload_id, tenant_id in expired:
        get_store().delete_prefix(upload_prefix(tenant_id, upload_id))
    return len(expired)


def delete_expired_jobs(settings: Settings) -> int:
    """Finished jobs older than MODELPRESS_JOB_RETENTION_S, with their artifacts and checkpoints."""
    if settings.job_retention_s is None:
        return 0
    cutoff = utcnow() - timedelta(seconds=settings.job_retention_s)
    with session_scope() as session:
        jobs = session.scalars(select(Job).where(Job.status.in_(FINISHED), or_(
            Job.finished_at < cutoff, Job.finished_at.is_(None) & (Job.created_at < cutoff)))).all()
        for job in jobs:
            delete_job(session, job)
    return len(jobs)


def sweep(settings: Settings, tenant_id: str | None = None) -> Orphans:
    """Remove what `find_orphans` finds older than MODELPRESS_STORE_SWEEP_GRACE_S: stray objects and unused
    blobs. Rows without objects are reported, not deleted: their users would lose data silently."""
    orphans = find_orphans(settings.store_sweep_grace_s, tenant_id)
    store = get_store()
    for key in orphans.objects:
        store.delete(key)
    if orphans.unused:
        with session_scope() as session:
            release_blobs(session, orphans.unused)
    if orphans.rows:
        log.error("store check: %d blob rows have no object in %s: %s", len(orphans.rows), store.url,
                  orphans.rows[:20])
    return orphans


def run(settings: Settings) -> None:
    for task in (expire_uploads, lambda: delete_expired_jobs(settings), lambda: sweep(settings)):
        try:
            task()
        except Exception:  # a store or database hiccup must not stop the others; they retry next round
            log.exception("store lifecycle step failed")


def delete_tenant_blobs(session: Session, tenant_id: str) -> None:
    """Release every blob of a tenant whose users have been deleted (all of them, after a tenant purge)."""
    release_blobs(session, session.scalars(select(Blob.id).where(Blob.tenant_id == tenant_id)).all())
