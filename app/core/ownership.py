from typing import TypeVar

from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.db.models import Tenant

Owned = TypeVar("Owned")


def get_owned(session: Session, kind: type[Owned], tenant: Tenant, resource_id: str) -> Owned:
    """A row of `kind` belonging to `tenant`; another tenant's row is indistinguishable from a missing one."""
    resource = session.get(kind, resource_id)
    if resource is None or resource.tenant_id != tenant.id:
        raise NotFound(f"{kind.__name__.lower()} {resource_id} not found")
    return resource
