from typing import Annotated

from fastapi import Depends, Header
from sqlalchemy.orm import Session

from app.auth.service import tenant_for_key
from app.core.errors import Unauthorized
from app.db.models import Tenant
from app.db.session import get_session

# scope="function": commit (and enqueue after it) before the response is sent; with the default "request" scope
# a client could read 201 and ask for the job before its row had committed.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def current_tenant(session: SessionDep, authorization: Annotated[str | None, Header()] = None,
                   x_api_key: Annotated[str | None, Header()] = None) -> Tenant:
    key = x_api_key or (authorization.removeprefix("Bearer ").strip() if authorization else None)
    if not key:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' (create one with "
                           "`modelpress keys create --tenant NAME`)")
    tenant = tenant_for_key(session, key)
    if tenant is None:
        raise Unauthorized("unknown or revoked API key")
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]
