from typing import Annotated

import anyio
from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer
from sqlalchemy.orm import Session

from app.auth.cache import tenant_cache
from app.auth.service import hash_key, tenant_for_key_hash
from app.core.errors import Unauthorized
from core.config import get_settings
from core.db.models import Tenant
from core.db.session import get_session, session_scope

# scope="function": commit (and enqueue after it) before the response is sent; with the default "request" scope
# a client could read 201 and ask for the job before its row had committed.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]

HOW_TO_SEND = ("send 'Authorization: Bearer <key>' (or 'X-API-Key: <key>'); create a key with "
               "`modelpress keys create --tenant NAME`")
# Declared for the OpenAPI document (the Authorize button of /docs); current_tenant reads the headers itself to
# explain what is wrong with them.
_bearer = HTTPBearer(auto_error=False, scheme_name="BearerKey", description="Authorization: Bearer <API key>")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKeyHeader",
                        description="Alternative to the Authorization header: X-API-Key: <API key>")


def _bearer_key(authorization: str) -> str:
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        shown = "a bare key" if not credentials else f"the scheme {scheme[:20]!r}"
        raise Unauthorized(f"the Authorization header holds {shown}; {HOW_TO_SEND}")
    if not credentials.strip():
        raise Unauthorized(f"the Authorization header has no key after 'Bearer'; {HOW_TO_SEND}")
    return credentials.strip()


def _look_up(key_hash: str) -> Tenant | None:
    # Its own short session: the connection goes back before the endpoint runs, instead of being held while the
    # request waits for a worker thread.
    with session_scope() as session:
        return tenant_for_key_hash(session, key_hash)


async def current_tenant(request: Request, _bearer_scheme=Security(_bearer),
                         _api_key_scheme=Security(_api_key)) -> Tenant:
    """The key's tenant, from memory for up to `auth_cache_ttl_s` seconds (see app/auth/cache.py), else from the
    database in a worker thread. Async, so a remembered key costs no thread hop and no query."""
    key = request.headers.get("x-api-key")
    if not key:
        authorization = request.headers.get("authorization")
        if not authorization:
            raise Unauthorized(f"missing API key: {HOW_TO_SEND}")
        key = _bearer_key(authorization)
    key_hash = hash_key(key)
    tenant = tenant_cache.get(key_hash)
    if tenant is None:
        tenant = await anyio.to_thread.run_sync(_look_up, key_hash)
        if tenant is None:
            raise Unauthorized("unknown or revoked API key")
        tenant_cache.put(key_hash, tenant, get_settings().auth_cache_ttl_s)
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]
