"""Celery entry point: `celery -A worker.tasks worker` (or `modelpress worker`)."""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_process_init, worker_ready

from app.config import get_settings
from app.db.migrate import ensure_schema
from app.db.session import get_engine
from app.queue import RUN_JOB, get_celery
from worker.claims import requeue_lost_jobs
from worker.runner import run_job as run_job_now

log = logging.getLogger(__name__)
celery = get_celery()
_settings = get_settings()
# Refuse to start on an unmigrated database (the embedded default migrates itself).
ensure_schema(get_engine(), _settings.resolved_database_url, _settings.should_auto_migrate)


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    """A forked pool process must not share the parent's database connections."""
    get_engine().dispose(close=False)


@celery.task(name=RUN_JOB)
def run_job(job_id: str) -> str:
    return run_job_now(job_id, get_settings())


@worker_ready.connect
def _start_reaper(**_kwargs) -> None:
    """Re-send jobs lost by a dead worker at start-up and then periodically, from the main worker process."""
    settings = get_settings()
    stop = threading.Event()

    def loop() -> None:
        while True:
            try:
                requeue_lost_jobs(settings)
            except Exception:  # a database hiccup must not kill the reaper; it retries next round
                log.exception("re-queueing lost jobs failed")
            if stop.wait(max(settings.stale_after_s / 2, 1.0)):
                return

    threading.Thread(target=loop, name="modelpress-reaper", daemon=True).start()
