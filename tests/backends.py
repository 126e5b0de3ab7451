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
        backends.append(Backend("postgres", *_for_this_test_process(database, broker)))
    return backends


def _for_this_test_process(database: str, broker: str) -> tuple[str, str]:
    """Under pytest-xdist each test process (`gw<N>`) gets a database and a Redis database of its own: a session
    wipes its schema and purges its queue, which would pull the ground from under the other process's tests.
    Worker N uses `<database>_gw<N>` (created on first use) and the Redis database N below the given one."""
    from sqlalchemy.engine import make_url

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return database, broker
    index = int(worker.removeprefix("gw"))
    url = make_url(database)
    own = url.set(database=f"{url.database}_{worker}")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")  # CREATE DATABASE runs outside a transaction
    with engine.connect() as connection:
        exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                    {"name": own.database}).first()
        if not exists:
            connection.execute(text(f'CREATE DATABASE "{own.database}"'))
    engine.dispose()
    base, _, number = broker.rpartition("/")
    if not number.isdigit() or int(number) < index:
        raise ValueError(f"MODELPRESS_TEST_BROKER_URL must end in a Redis database number of at least {index} "
                         f"(test process {worker} uses that number minus {index}); got {broker}")
    return own.render_as_string(hide_password=False), f"{base}/{int(number) - index}"


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
