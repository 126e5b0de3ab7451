import re
from typing import TypeVar

from sqlalchemy.orm import Session

from app.core.errors import NotFound
from core.db.models import Tenant

Owned = TypeVar("Owned")
# Every id is new_id()'s prefix_hex: anything else (a NUL byte, which PostgreSQL text cannot even hold; 10 KB of
# text) cannot name a row, so it is not looked up.
_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


def get_owned(session: Session, kind: type[Owned], tenant: Tenant, resource_id: str) -> Owned:
    """A row of `kind` belonging to `tenant`; another tenant's row is indistinguishable from a missing one."""
    plausible = _ID.fullmatch(resource_id) is not None
    resource = session.get(kind, resource_id) if plausible else None
    if resource is None or resource.tenant_id != tenant.id:
        shown = resource_id if plausible else repr(resource_id[:40])
        raise NotFound(f"{kind.__name__.lower()} {shown} not found")
    return resource
