"""A looked-up key is remembered for auth_cache_ttl_s seconds; a revoked key is refused once that has passed."""

import time

from sqlalchemy import update

from app.auth.service import hash_key
from core.config import get_settings
from core.db.models import ApiKey, utcnow
from core.db.session import session_scope
from tests.app.conftest import new_key


def _revoke(key: str) -> None:
    with session_scope() as session:
        session.execute(update(ApiKey).where(ApiKey.key_hash == hash_key(key)).values(revoked_at=utcnow()))


def test_a_revoked_key_is_refused_within_the_cache_ttl(api, monkeypatch):
    monkeypatch.setattr(get_settings(), "auth_cache_ttl_s", 0.5)
    key = new_key()
    headers = {"Authorization": f"Bearer {key}"}
    assert api.get("/v1/jobs", headers=headers).status_code == 200
    _revoke(key)
    assert api.get("/v1/jobs", headers=headers).status_code == 200  # still remembered: the documented window
    time.sleep(0.6)
    refused = api.get("/v1/jobs", headers=headers)
    assert refused.status_code == 401 and refused.json()["detail"] == "unknown or revoked API key"


def test_without_the_cache_revocation_is_immediate(api, monkeypatch):
    monkeypatch.setattr(get_settings(), "auth_cache_ttl_s", 0)
    key = new_key()
    headers = {"X-API-Key": key}
    assert api.get("/v1/jobs", headers=headers).status_code == 200
    _revoke(key)
    assert api.get("/v1/jobs", headers=headers).status_code == 401


def test_a_key_works_the_moment_it_is_created(api):
    for _ in range(3):
        assert api.get("/v1/jobs", headers={"Authorization": f"Bearer {new_key()}"}).status_code == 200
