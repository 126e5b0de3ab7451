"""Pooled connections the database has dropped are replaced before use, not handed to a request."""

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from core.db.session import VALIDATE_AFTER_IDLE_S
from tests.app.conftest import new_key


def test_a_request_after_the_database_dropped_our_connections_succeeds(backend, api):
    if not backend.database_url:
        pytest.skip("SQLite has no server to drop connections")
    headers = {"Authorization": f"Bearer {new_key()}"}
    assert api.get("/v1/jobs", headers=headers).status_code == 200
    killer = create_engine(backend.database_url, poolclass=NullPool)
    with killer.connect() as connection:
        dropped = connection.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                          "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        assert dropped.scalar() >= 1
    killer.dispose()
    time.sleep(VALIDATE_AFTER_IDLE_S + 0.1)
    for _ in range(5):
        assert api.get("/v1/jobs", headers=headers).status_code == 200
