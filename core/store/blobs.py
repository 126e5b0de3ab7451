"""The database's side of the store: one `Blob` row per object, content-addressed per tenant.

Writing streams the bytes to a staging key while hashing them, then moves them to `tenants/<t>/sha256/<hex>`
unless that object exists already (the same bytes are stored once). Deleting the last row that uses a blob
deletes the blob's row, and once that deletion has committed, its object.

The order keeps one promise, whatever process is killed between two steps: a committed blob row always has its
object. A write stores the object before its row commits; a delete removes the object only after the row's
removal commits. A kill in between leaves an object without a row, which `core.store.lifecycle.sweep` removes.

Every step that creates, keeps or removes a blob's object runs while a transaction holds the lock of the blob's
row (`_lock`: an UPDATE, or the INSERT of the row; a row lock on PostgreSQL, the write lock on SQLite), so a
concurrent upload of the same bytes and the deletion of the last user of them cannot leave a row without its
object. A write whose transaction rolls back removes the object it added (`_forget_on_rollback`).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from sqlalchemy import exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.models import Artifact, Blob, Dataset, JobCheckpoint, Model, new_id, utcnow
from core.db.session import after_commit, on_rollback, session_scope
from core.store import get_store
from core.store.base import Written, blob_key, staging_key

# Every table whose rows use a blob; a blob none of them names is garbage.
BLOB_USERS = (Model, Dataset, Artifact, JobCheckpoint)


def key_of(blob: Blob) -> str:
    return blob_key(blob.tenant_id, blob.sha256)


def write_blob(session: Session, tenant_id: str, source: BinaryIO, limit: int | None = None) -> Blob:
    """Store a readable stream as a blob of `tenant_id` (or find the blob that holds the same bytes)."""
    store = get_store()
    staged = staging_key(tenant_id, secrets.token_hex(16))
    written = store.write(staged, source, limit)
    try:
        return _publish(session, tenant_id, staged, written)
    finally:
        store.delete(staged)  # a no-op once it has been moved


def write_file(session: Session, tenant_id: str, path: Path) -> Blob:
    with open(path, "rb") as source:
        return write_blob(session, tenant_id, source)


def _publish(session: Session, tenant_id: str, staged: str, written: Written) -> Blob:
    store = get_store()
    blob, created = _lock(session, tenant_id, written.sha256, written.size_bytes)
    key = blob_key(tenant_id, written.sha256)
    if not store.exists(key):  # a new blob, or a row whose object is missing (the sweep reports such rows)
        store.move(staged, key)
    if created:
        _forget_on_rollback(session, tenant_id, written.sha256)
    return blob


def _lock(session: Session, tenant_id: str, sha256: str, size: int) -> tuple[Blob, bool]:
    """The blob row for (tenant, sha256), locked until the transaction ends, created if absent; and whether it
    was created here."""
    match = (Blob.tenant_id == tenant_id, Blob.sha256 == sha256)
    for _ in range(3):
        # A no-op UPDATE takes the row's lock (SELECT ... FOR UPDATE would not lock anything on SQLite).
        if session.execute(update(Blob).where(*match).values(size_bytes=Blob.size_bytes)).rowcount:
            return session.scalars(select(Blob).where(*match)).one(), False
        row = {"id": new_id("blob"), "tenant_id": tenant_id, "sha256": sha256, "size_bytes": size,
               "created_at": utcnow()}
        if session.get_bind().dialect.name == "sqlite":
            # The UPDATE above took SQLite's write lock: no other transaction can insert the row meanwhile.
            session.execute(insert(Blob).values(**row))
            return session.scalars(select(Blob).where(*match)).one(), True
        try:
            with session.begin_nested():
                session.execute(insert(Blob).values(**row))
            return session.scalars(select(Blob).where(*match)).one(), True
        except IntegrityError:
            continue  # a concurrent transaction inserted it first: lock that row instead
    raise RuntimeError(f"could not lock blob {tenant_id}/{sha256}")


def _forget_on_rollback(session: Session, tenant_id: str, sha256: str) -> None:
    on_rollback(session, lambda: _delete_object_if_unrecorded(tenant_id, sha256))


def _delete_object_if_unrecorded(tenant_id: str, sha256: str) -> None:
    """Delete a blob's object unless a committed row names it (again), deciding under the row's lock."""
    with session_scope() as cleanup:
        _, created = _lock(cleanup, tenant_id, sha256, 0)
        if created:  # no committed row names these bytes: nothing may keep the object
            get_store().delete(blob_key(tenant_id, sha256))
        cleanup.rollback()  # the placeholder row only held the lock


def read_blob(blob: Blob, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """The bytes [start, end] (inclusive, like HTTP ranges) of a blob, a chunk at a time."""
    if blob.size_bytes == 0:
        return iter(())
    return get_store().read(key_of(blob), start, end)


def copy_to_file(blob: Blob, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    get_store().copy_to_file(key_of(blob), path)
    return path


def referenced(session: Session, blob_id: str) -> bool:
    return bool(session.scalar(select(or_(*(exists().where(user.blob_id == blob_id) for user in BLOB_USERS)))))


def lock_blob(session: Session, blob_id: str) -> bool:
    """Take the lock of a blob's row until the transaction ends (waiting for a transaction that holds it);
    False if the row is gone."""
    return bool(session.execute(update(Blob).where(Blob.id == blob_id).values(size_bytes=Blob.size_bytes)).rowcount)


def release_blobs(session: Session, blob_ids: Iterable[str]) -> None:
    """Delete the blobs (rows and objects) that no row uses any more. Call after deleting their users."""
    session.flush()
    for blob_id in set(blob_ids):
        if not lock_blob(session, blob_id):
            continue  # already gone
        if referenced(session, blob_id):
            continue
        blob = session.get(Blob, blob_id)
        tenant_id, sha256 = blob.tenant_id, blob.sha256
        session.delete(blob)
        session.flush()
        # The object goes only once the row's removal has committed: deleted before the commit, a process killed
        # in between (or a rollback) left a committed row, and perhaps its users, naming bytes that were gone.
        # The deletion takes the row's lock again, so an upload of the same bytes that committed a new row
        # meanwhile keeps the object.
        after_commit(session, lambda tenant_id=tenant_id, sha256=sha256: _delete_object_if_unrecorded(
            tenant_id, sha256))
