"""Resumable uploads: a session declares the whole file (size, sha256), parts arrive in any order and any number
of times (each checked against its own sha256 and stored in the store at once), and completion assembles them,
checks the whole file and validates it like a normal upload. Memory stays at one read buffer however large the
file: parts are spooled to disk by the router and streamed into the store; assembly streams part by part."""

from __future__ import annotations

import math
import tempfile
from datetime import timedelta
from functools import partial
from typing import BinaryIO, Iterator

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.core import quotas
from app.core.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from app.core.ownership import get_owned
from app.core.uploads import inspect_and_store, upload_name_of
from app.resources.service import add_dataset, add_model
from app.uploads.schemas import UploadCreate
from compression.inspect import inspect_dataset, inspect_model
from core.config import Settings
from core.db.models import Dataset, Model, Tenant, UploadPart, UploadSession, utcnow
from core.db.session import after_commit
from core.store import get_store
from core.store.base import HashingReader, TooLarge, part_key, upload_prefix

LIMITS = {"model": "max_model_bytes", "dataset": "max_dataset_bytes"}
ROWS = {"model": Model, "dataset": Dataset}
MAX_PARTS = 10_000  # S3's limit on parts, kept so a session maps onto any store


def create(session: Session, tenant: Tenant, request: UploadCreate, settings: Settings) -> UploadSession:
    limit = getattr(settings, LIMITS[request.kind])
    if request.size_bytes > limit:
        raise PayloadTooLarge(f"a {request.kind} of {request.size_bytes} bytes is over the limit of {limit} bytes")
    part_bytes = request.part_bytes or settings.upload_part_max_bytes
    if part_bytes > settings.upload_part_max_bytes:
        raise InvalidInput(f"part_bytes: at most {settings.upload_part_max_bytes} bytes per part on this service")
    if math.ceil(request.size_bytes / part_bytes) > MAX_PARTS:
        raise InvalidInput(f"part_bytes: {request.size_bytes} bytes in parts of {part_bytes} make more than "
                           f"{MAX_PARTS} parts; use larger parts")
    quotas.check_storage(session, tenant, request.size_bytes, settings)
    upload = UploadSession(tenant_id=tenant.id, kind=request.kind, name=upload_name_of(request.name, request.kind),
                           size_bytes=request.size_bytes, sha256=request.sha256, part_bytes=part_bytes,
                           expires_at=utcnow() + timedelta(seconds=settings.upload_session_ttl_s))
    session.add(upload)
    session.flush()
    return upload


def get(session: Session, tenant: Tenant, upload_id: str) -> UploadSession:
    upload = get_owned(session, UploadSession, tenant, upload_id)
    if upload.result_id is None and upload.expires_at <= utcnow():
        raise NotFound(f"upload {upload_id} expired at {upload.expires_at.isoformat()}; start a new one")
    return upload


def parts_total(upload: UploadSession) -> int:
    return math.ceil(upload.size_bytes / upload.part_bytes)


def part_size(upload: UploadSession, number: int) -> int:
    if not 0 <= number < parts_total(upload):
        raise InvalidInput(f"part {number}: this upload has parts 0 to {parts_total(upload) - 1}")
    return min(upload.part_bytes, upload.size_bytes - number * upload.part_bytes)


def received(session: Session, upload: UploadSession) -> list[UploadPart]:
    return list(session.scalars(select(UploadPart).where(UploadPart.session_id == upload.id)
                                .order_by(UploadPart.number)))


def put_part(session: Session, tenant: Tenant, upload_id: str, number: int, body: BinaryIO, declared_sha256: str
             ) -> UploadPart:
    """Store one part (again, if it was sent before: the last complete copy wins)."""
    upload = get(session, tenant, upload_id)
    if upload.result_id:
        raise Conflict(f"upload {upload_id} is already complete")
    expected = part_size(upload, number)
    key = part_key(tenant.id, upload.id, number)
    try:
        written = get_store().write(key, body, limit=expected)
    except TooLarge:
        raise InvalidInput(f"part {number} must be exactly {expected} bytes; more were sent") from None
    if written.size_bytes != expected or written.sha256 != declared_sha256:
        get_store().delete(key)
        what = (f"{written.size_bytes} bytes arrived, {expected} expected" if written.size_bytes != expected
                else f"its sha256 is {written.sha256}, not {declared_sha256} (Content-SHA256)")
        raise InvalidInput(f"part {number} was not stored: {what}; send it again")
    # An upsert: a client retrying a part whose first request is still being served sends the same part twice.
    dialect_insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    values = {"size_bytes": written.size_bytes, "sha256": written.sha256}
    session.execute(dialect_insert(UploadPart).values(session_id=upload.id, number=number, **values)
                    .on_conflict_do_update(index_elements=["session_id", "number"], set_=values))
    return UploadPart(session_id=upload.id, number=number, **values)


def complete(session: Session, tenant: Tenant, upload_id: str, settings: Settings,
             task: str | None = None) -> UploadSession:
    """Assemble, check and validate the file; make it a model or dataset. Repeating it returns the same one.
    `task`: a Hugging Face folder model's task, as with a normal upload."""
    upload = get(session, tenant, upload_id)
    if upload.result_id:
        return upload
    missing = sorted(set(range(parts_total(upload))) - {part.number for part in received(session, upload)})
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise Conflict(f"upload {upload_id} lacks {len(missing)} part(s): {shown}; PUT them, then complete again")
    if upload.kind == "model":
        inspect = partial(inspect_model, limits=settings.archive_limits, task=task)
    elif task is not None:
        raise InvalidInput("a task is given only when completing a model upload")
    else:
        inspect = partial(inspect_dataset, limits=settings.archive_limits)
    with tempfile.TemporaryFile(dir=settings.data_dir) as assembled:
        reader = HashingReader(_PartsReader(_part_chunks(tenant.id, upload)))
        while chunk := reader.read(1024**2):
            assembled.write(chunk)
        if reader.written().sha256 != upload.sha256 or reader.size != upload.size_bytes:
            raise InvalidInput(f"the assembled file ({reader.size} bytes) has sha256 {reader.written().sha256}, "
                               f"not the {upload.sha256} this upload declared; PUT the parts again or start a new "
                               "upload")
        blob, inspected = inspect_and_store(session, tenant, assembled, upload.size_bytes, upload.name, inspect,
                                            decompress_limit=getattr(settings, LIMITS[upload.kind]))
    add_row = add_model if upload.kind == "model" else add_dataset
    row = add_row(session, tenant, upload.name, blob, inspected)
    # Of two concurrent completions, the first to record its result wins; the other rolls back its row.
    if not session.execute(update(UploadSession).where(UploadSession.id == upload.id,
                                                       UploadSession.result_id.is_(None))
                           .values(result_id=row.id)).rowcount:
        raise Conflict(f"upload {upload_id} was completed by another request meanwhile; GET it for the result")
    session.execute(delete(UploadPart).where(UploadPart.session_id == upload.id))
    prefix = upload_prefix(tenant.id, upload.id)
    after_commit(session, lambda: get_store().delete_prefix(prefix))
    session.refresh(upload)
    return upload


def result(session: Session, upload: UploadSession) -> Model | Dataset | None:
    return session.get(ROWS[upload.kind], upload.result_id) if upload.result_id else None


def abort(session: Session, tenant: Tenant, upload_id: str) -> None:
    upload = get_owned(session, UploadSession, tenant, upload_id)
    prefix = upload_prefix(tenant.id, upload.id)
    session.delete(upload)
    session.flush()
    after_commit(session, lambda: get_store().delete_prefix(prefix))


def bytes_received(session: Session, upload: UploadSession) -> int:
    return session.scalar(select(func.coalesce(func.sum(UploadPart.size_bytes), 0))
                          .where(UploadPart.session_id == upload.id))


def _part_chunks(tenant_id: str, upload: UploadSession) -> Iterator[bytes]:
    store = get_store()
    for number in range(parts_total(upload)):
        yield from store.read(part_key(tenant_id, upload.id, number))


class _PartsReader:
    """The parts, in order, as one readable stream."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.buffer = chunks, b""

    def read(self, size: int = -1) -> bytes:
        while len(self.buffer) < size and (chunk := next(self.chunks, None)) is not None:
            self.buffer += chunk
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out
