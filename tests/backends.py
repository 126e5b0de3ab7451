"""The real databases and brokers tests run against: SQLite + kombu's SQLAlchemy transport always, and
PostgreSQL + Redis when MODELPRESS_TEST_DATABASE_URL / MODELPRESS_TEST_BROKER_URL point at them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text


@dataclass(frozen=True)
class Backend:
    name: str
    database_url: str | None  # None: the embedded default inside data_dir
    broker_url: str | None
    data_dir: Path | None = None

    def env(self, data_dir: Path) -> dict[str, str]:
        env = {"MODELPRESS_DATA_DIR": str(data_dir)}
        if self.database_url:
            env["MODELPRESS_DATABASE_URL"] = self.database_url
        if self.broker_url:
            env["MODELPRESS_BROKER_URL"] = self.broker_url
        return env


def available_backends() -> list[Backend]:
    backends = [Backend("sqlite", None, None)]
    database, broker = os.environ.get("MODELPRESS_TEST_DATABASE_URL"), os.environ.get("MODELPRESS_TEST_BROKER_URL")
    if database and broker:
        backends.append(Backend("postgres", database, broker))
    return backends


def reset_database(url: str) -> None:
    """Start a test session from an empty PostgreSQL schema (the test database is ours to wipe)."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def clear_service_caches(keep_engine: bool = False) -> None:
    """Settings, engine, store and Celery app are cached per process; tests switch backends, so they start over
    (`keep_engine`: only the settings and the store change, e.g. to another store on the same database)."""
    from core.config import get_settings
    from core.db import session
    from core.queue import get_celery
    from core.store import get_store
    cached = (get_settings, get_store) if keep_engine else (get_settings, get_store, session.get_engine,
                                                            session._session_factory, get_celery)
    for function in cached:
        function.cache_clear()
