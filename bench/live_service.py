"""A real modelpress service (API + one worker) started by a bench script on a fresh backend, with an API key.

Used by bench/load.py and bench/fuzz_api.py. The embedded default gets a new data directory; PostgreSQL + Redis
get their public schema and Redis database wiped first, so give them names nobody else uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/bench_load"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/5"


@dataclass(frozen=True)
class BackendChoice:
    name: str
    database_url: str | None = None  # None: the embedded default (SQLite + kombu's SQLAlchemy transport)
    broker_url: str | None = None


@dataclass
class LiveService:
    backend: BackendChoice
    base_url: str
    api_key: str
    log_path: Path
    processes: list[subprocess.Popen]


def postgres_reachable(database_url: str, broker_url: str) -> str | None:
    """None when both answer, else why not (the bench then skips that backend and says so)."""
    import redis
    from sqlalchemy import create_engine, text
    try:
        engine = create_engine(database_url, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        redis.Redis.from_url(broker_url, socket_connect_timeout=3).ping()
    except Exception as error:  # any failure means "not reachable"; the message says which
        return f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    return None


def choose_backends(names: list[str], database_url: str, broker_url: str) -> tuple[list[BackendChoice], list[str]]:
    chosen, skipped = [], []
    for name in names:
        if name == "sqlite":
            chosen.append(BackendChoice("sqlite"))
        elif name == "postgres":
            reason = postgres_reachable(database_url, broker_url)
            if reason:
                skipped.append(f"postgres skipped: {reason}")
            else:
                chosen.append(BackendChoice("postgres", database_url, broker_url))
        else:
            raise SystemExit(f"unknown backend {name!r}: use sqlite and/or postgres")
    return chosen, skipped


def _wipe(backend: BackendChoice) -> None:
    import redis
    from sqlalchemy import create_engine, text
    engine = create_engine(backend.database_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    redis.Redis.from_url(backend.broker_url).flushdb()


def service_env(backend: BackendChoice, extra: dict[str, str] | None = None) -> dict[str, str]:
    # One torch thread in the worker, so the jobs it runs leave the other core to the API being measured.
    env = {"OMP_NUM_THREADS": "1", "MODELPRESS_TORCH_THREADS": "1", **(extra or {})}
    if backend.database_url:
        env |= {"MODELPRESS_DATABASE_URL": backend.database_url, "MODELPRESS_BROKER_URL": backend.broker_url}
    return env


@contextmanager
def live_service(backend: BackendChoice, env: dict[str, str] | None = None,
                 keep_log: Path | None = None) -> Iterator[LiveService]:
    """Start API + worker on `backend`, wait until /readyz answers, create a key; stop both on exit."""
    from modelpress.demo import _free_port, wait_ready
    from modelpress.service_commands import start_service, stop_service

    if backend.database_url:
        _wipe(backend)
    full_env = service_env(backend, env)
    with tempfile.TemporaryDirectory(prefix=f"modelpress-{backend.name}-") as tmp:
        data_dir = Path(tmp) / "data"
        log_path = keep_log or Path(tmp) / "service.log"
        port = _free_port()
        processes = start_service(data_dir, "127.0.0.1", port, log_path=log_path, env=full_env)
        try:
            wait_ready(f"http://127.0.0.1:{port}", processes=processes)
            key = subprocess.run([sys.executable, "-m", "modelpress.cli", "keys", "create", "--tenant", "bench"],
                                 env={**os.environ, **full_env, "MODELPRESS_DATA_DIR": str(data_dir)},
                                 capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
            yield LiveService(backend, f"http://127.0.0.1:{port}", key, log_path, processes)
        finally:
            stop_service(processes)
