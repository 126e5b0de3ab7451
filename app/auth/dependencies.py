from typing import Annotated

import anyio
from fastapi import Depends, Header
from sqlalchemy.orm import Session

from app.auth.cache import tenant_cache
from app.auth.service import hash_key, tenant_for_key_hash
from app.config import get_settings
from app.core.errors import Unauthorized
from app.db.models import Tenant
from app.db.session import get_session, session_scope

# scope="function": commit (and enqueue after it) before the response is sent; with the default "request" scope
# a client could read 201 and ask for the job before its row had committed.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _look_up(key_hash: str) -> Tenant | None:
    # Its own short session: the connection goes back before the endpoint runs, instead of being held while the
    # request waits for a worker thread.
    with session_scope() as session:
        return tenant_for_key_hash(session, key_hash)


async def current_tenant(authorization: Annotated[str | None, Header()] = None,
                         x_api_key: Annotated[str | None, Header()] = None) -> Tenant:
    """The key's tenant, from memory for up to `auth_cache_ttl_s` seconds (see app/auth/cache.py), else from the
    database in a worker thread. Async, so a remembered key costs no thread hop and no query."""
    key = x_api_key or (authorization.removeprefix("Bearer ").strip() if authorization else None)
    if not key:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' (create one with "
                           "`modelpress keys create --tenant NAME`)")
    key_hash = hash_key(key)
    tenant = tenant_cache.get(key_hash)
    if tenant is None:
        tenant = await anyio.to_thread.run_sync(_look_up, key_hash)
        if tenant is None:
            raise Unauthorized("unknown or revoked API key")
        tenant_cache.put(key_hash, tenant, get_settings().auth_cache_ttl_s)
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]
