"""Rows the tests create directly, as the API would have."""


def ensure_tenant(session, name: str) -> str:
    from sqlalchemy import select

    from app.auth.service import create_key
    from core.db.models import Tenant
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        create_key(session, name)
        tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    return tenant.id
