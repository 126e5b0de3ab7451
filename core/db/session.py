"""Engine, connection pool and sessions, for the API and the worker alike.

A session checks a connection out at its first query and gives it back at commit or rollback: a request holds
one only while its queries run. The pool has no overflow, so its size is the hard bound; the API admits at most
`api_max_in_flight` requests per process (app/core/overload.py) and the pool is larger than that, so an admitted
request does not wait for a connection. If one still waits `db_pool_timeout_s`, SQLAlchemy raises
`sqlalchemy.exc.TimeoutError`, which the API answers with 503 (overloaded).
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from functools import lru_cache
from typing import AsyncIterator, Callable, Iterator

import anyio
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from core.config import get_settings

log = logging.getLogger(__name__)
VALIDATE_AFTER_IDLE_S = 0.5


def make_engine(url: str, pool_size: int = 5, pool_timeout_s: float = 30.0) -> Engine:
    pool = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": pool_timeout_s}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60}, **pool)

        @event.listens_for(engine, "first_connect")
        def _wal(connection, _record):
            # WAL lets the API read while the worker writes. It is a property of the file, so once is enough.
            connection.execute("PRAGMA journal_mode=WAL").close()

        @event.listens_for(engine, "connect")
        def _per_connection_pragmas(connection, _record):
            # These hold per connection; pooled connections live on, so this runs once per pool slot, not per
            # request. Foreign keys are off by default in SQLite.
            cursor = connection.cursor()
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine
    engine = create_engine(url, pool_use_lifo=True, **pool)
    _ping_idle_connections(engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    """Check a pooled connection before use only if it sat idle for a while, as HikariCP does.

    SQLAlchemy's pool_pre_ping pings on every checkout: one more round trip per request, about 13 % of a poll's
    API CPU. A connection used within the last VALIDATE_AFTER_IDLE_S is taken as alive; with LIFO checkout the
    connections in use under load stay hot, and the rest are pinged when they are next needed. One that fails
    the ping is dropped and the pool hands out another (SQLAlchemy retries checkout on DisconnectionError). The
    price: a connection the server dropped less than VALIDATE_AFTER_IDLE_S after its last use still reaches one
    request, which fails."""

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _mark_alive(_dbapi_connection, record):
        record.info["alive_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy):
        if time.monotonic() - record.info.get("alive_at", 0.0) < VALIDATE_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # any failure: this connection is unusable
            raise DisconnectionError(f"pooled connection failed its ping: {error}") from error


@lru_cache
def get_engine() -> Engine:
    settings = get_settings()
    return make_engine(settings.resolved_database_url, settings.resolved_db_pool_size, settings.db_pool_timeout_s)


@lru_cache
def _session_factory() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` once the current transaction has committed (e.g. enqueue a job only once its row exists).

    A callback that fails is logged, not raised: the transaction stands, and telling the caller it failed would
    make it retry something that happened. Use it only for steps something else retries (the worker's reaper
    re-sends queued jobs whose message never arrived)."""
    session.info.setdefault("after_commit", []).append(callback)


def on_rollback(session: Session, callback: Callable[[], None]) -> None:
    """Run `callback` if the current transaction is rolled back (e.g. remove a stored object no row will name).
    A failing callback is logged; what it leaves is for a periodic sweep."""
    session.info.setdefault("on_rollback", []).append(callback)


def _run(callbacks: list[Callable[[], None]], after: str) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("a step after %s failed", after)


def _commit(session: Session) -> None:
    session.commit()  # gives the connection back to the pool
    session.info.pop("on_rollback", None)
    _run(session.info.pop("after_commit", []), "commit; the committed transaction stands")


def _rollback(session: Session) -> None:
    session.info.pop("after_commit", None)
    session.rollback()
    _run(session.info.pop("on_rollback", []), "rollback")


def _end(session: Session, failed: bool) -> None:
    try:
        if failed:
            _rollback(session)
            return
        try:
            _commit(session)
        except BaseException:  # the commit itself failed: nothing was written
            _rollback(session)
            raise
    finally:
        session.close()


@contextmanager
def session_scope() -> Iterator[Session]:
    """The one place that commits or rolls back; services only add and flush."""
    session = _session_factory()()
    failed = True
    try:
        yield session
        failed = False
    finally:
        _end(session, failed)


async def get_session() -> AsyncIterator[Session]:
    """FastAPI dependency. Making the session needs no connection, so it happens on the event loop; the commit
    (and what follows it) runs in a worker thread after the endpoint returns, and runs even if the client left."""
    session = _session_factory()()
    failed = True
    try:
        yield session
        failed = False
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_end, session, failed)
