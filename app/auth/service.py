from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import ApiKey, Tenant, utcnow

KEY_PREFIX = "mp_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(session: Session, tenant_name: str) -> str:
    """Create an API key for the tenant (created if new). The key is returned once and only its hash is stored."""
    tenant = session.scalar(select(Tenant).where(Tenant.name == tenant_name))
    if tenant is None:
        tenant = Tenant(name=tenant_name)
        session.add(tenant)
        session.flush()
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(tenant_id=tenant.id, key_hash=hash_key(key), prefix=key[:10]))
    session.flush()
    return key


def tenant_for_key_hash(session: Session, key_hash: str) -> Tenant | None:
    """The tenant of a key that exists and is not revoked, in one query."""
    return session.scalar(select(Tenant).join(ApiKey, ApiKey.tenant_id == Tenant.id)
                          .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))


def tenant_for_key(session: Session, key: str) -> Tenant | None:
    return tenant_for_key_hash(session, hash_key(key))


def list_keys(session: Session, tenant_name: str | None = None) -> list[tuple[ApiKey, str]]:
    """Every key (or one tenant's) with its tenant's name, oldest first. Keys themselves are never stored: a key
    is shown by its id and its first characters (`prefix`)."""
    query = select(ApiKey, Tenant.name).join(Tenant, Tenant.id == ApiKey.tenant_id).order_by(ApiKey.created_at)
    if tenant_name is not None:
        query = query.where(Tenant.name == tenant_name)
    return [(key, name) for key, name in session.execute(query).all()]


def revoke_key(session: Session, key_id: str) -> ApiKey | None:
    """Revoke the key with this id (or this full key); None if there is none. Revoking twice keeps the first time.
    API processes that remembered the key stop accepting it within `auth_cache_ttl_s`."""
    key = session.get(ApiKey, key_id) or session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(key_id)))
    if key is not None and key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    return key
