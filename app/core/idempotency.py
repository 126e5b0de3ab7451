"""Idempotency-Key on the POSTs that create something: a retried request gets the first result (same status and
body) instead of creating a duplicate.

The key is claimed by inserting its row in the same transaction that creates the resource, and the result is
written to that row before the commit: the resource and its replayable result become visible together, and a
request that fails leaves no claim behind. A concurrent request with the same key blocks on the row's unique
index until the first one commits (then replays its result) or rolls back (then does the work itself).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import Annotated, Callable

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.core.errors import Conflict, IdempotencyKeyReused, InvalidInput
from core.config import get_settings
from core.db.models import IdempotencyRecord, Tenant, utcnow

KEY_HEADER = "Idempotency-Key"
IdempotencyKey = Annotated[str | None, Header(
    alias=KEY_HEADER, description="Any unique string (a UUID, say; 1-255 visible ASCII characters). A retry "
                                         "with the same key and the same request returns the first result instead "
                                         "of creating a duplicate; keys are kept for 24 hours (a setting).")]
_KEY = re.compile(r"[\x21-\x7e]{1,255}")
REPLAYED_HEADER = "Idempotent-Replayed"


def json_fingerprint(payload: BaseModel) -> str:
    """sha256 of the fields the client sent, in canonical form (whitespace and key order do not matter)."""
    canonical = json.dumps(payload.model_dump(mode="json", exclude_unset=True), sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def has_record(session: Session, tenant: Tenant, key: str | None) -> bool:
    return key is not None and session.scalar(
        select(IdempotencyRecord.key).where(IdempotencyRecord.tenant_id == tenant.id, IdempotencyRecord.key == key,
                                            IdempotencyRecord.expires_at >= utcnow())) is not None


def respond_once(session: Session, tenant: Tenant, key: str | None, endpoint: str, fingerprint: Callable[[], str],
                 status: int, create: Callable[[], BaseModel]) -> JSONResponse:
    """Run `create` and answer with its result, unless `key` already holds a result for this tenant: then replay
    it (or refuse, if the key was used for a different request)."""
    if key is None:
        return JSONResponse(create().model_dump(mode="json"), status)
    if not _KEY.fullmatch(key):
        raise InvalidInput("Idempotency-Key must be 1-255 visible ASCII characters (a UUID is a good key)")
    digest = fingerprint()
    if not _claim(session, tenant, key, endpoint, digest):
        return _replay(session, tenant, key, endpoint, digest)
    body = create().model_dump(mode="json")
    session.execute(update(IdempotencyRecord)
                    .where(IdempotencyRecord.tenant_id == tenant.id, IdempotencyRecord.key == key)
                    .values(response_status=status, response_body=body))
    return JSONResponse(body, status)


def _claim(session: Session, tenant: Tenant, key: str, endpoint: str, digest: str) -> bool:
    """Insert the key's row; False when a committed row already holds it."""
    settings = get_settings()
    now = utcnow()
    postgres = session.get_bind().dialect.name == "postgresql"
    insert = (postgresql if postgres else sqlite).insert
    if postgres:  # wait at most this long for a concurrent request holding the key
        session.execute(text(f"SET LOCAL lock_timeout = '{int(settings.idempotency_wait_s * 1000)}ms'"))
    try:
        # Expired keys of this tenant go first, so the table holds at most a day of each tenant's keys.
        session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.tenant_id == tenant.id,
                                                        IdempotencyRecord.expires_at < now))
        inserted = session.execute(insert(IdempotencyRecord.__table__).values(
            tenant_id=tenant.id, key=key, endpoint=endpoint, fingerprint=digest, created_at=now,
            expires_at=now + timedelta(seconds=settings.idempotency_ttl_s)).on_conflict_do_nothing()
            .returning(IdempotencyRecord.key)).scalar_one_or_none()
    except OperationalError as exc:
        if not _waited_too_long(exc):
            raise
        raise _in_progress() from None
    if postgres:
        session.execute(text("SET LOCAL lock_timeout TO DEFAULT"))
    return inserted is not None


def _replay(session: Session, tenant: Tenant, key: str, endpoint: str, digest: str) -> JSONResponse:
    record = session.scalar(select(IdempotencyRecord).where(IdempotencyRecord.tenant_id == tenant.id,
                                                            IdempotencyRecord.key == key)
                            .execution_options(populate_existing=True))
    if record is None or record.response_status is None:  # purged as expired by a concurrent request: rare
        raise _in_progress()
    if (record.endpoint, record.fingerprint) != (endpoint, digest):
        raise IdempotencyKeyReused(
            f"Idempotency-Key {key!r} was used at {record.created_at:%Y-%m-%d %H:%M:%S} UTC for "
            f"{'a different request to ' if record.endpoint == endpoint else ''}{record.endpoint}; a key stands for "
            "one request: resend exactly that request to get its result, or use a new key for a new request")
    return JSONResponse(record.response_body, record.response_status, headers={REPLAYED_HEADER: "true"})


def _waited_too_long(exc: OperationalError) -> bool:
    """PostgreSQL's lock_timeout (SQLSTATE 55P03) or SQLite's busy timeout."""
    return getattr(exc.orig, "sqlstate", None) == "55P03" or "database is locked" in str(exc.orig)


def _in_progress() -> Conflict:
    return Conflict("a request with this Idempotency-Key is still in progress; retry in a few seconds to get its "
                    "result", headers={"Retry-After": "2"})
