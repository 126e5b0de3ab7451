"""Celery entry point: `celery -A worker.tasks worker` (or `modelpress worker`)."""

from __future__ import annotations

import logging
import threading

from celery.signals import worker_process_init, worker_ready

from core.config import get_settings
from core.db.migrate import ensure_schema
from core.db.session import get_engine
from core.queue import RUN_JOB, get_celery
from worker.reaper import reap
from worker.runner import run_job as run_job_now
from worker.sandbox import base_environment, probe, skipped_isolations
from worker.spawner import zygote

log = logging.getLogger(__name__)
celery = get_celery()
_settings = get_settings()
# Refuse to start on an unmigrated database (the embedded default migrates itself).
ensure_schema(get_engine(), _settings.resolved_database_url, _settings.should_auto_migrate)


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    """A forked pool process must not share the parent's database connections."""
    get_engine().dispose(close=False)


@worker_process_init.connect
def _start_zygote(**_kwargs) -> None:
    """Let the pool process's zygote import torch and the library now, before its first job (worker.zygote);
    from this, the pool process's main thread, which runs its jobs and lives as long as it does."""
    zygote(base_environment(get_settings()))


@celery.task(name=RUN_JOB)
def run_job(job_id: str) -> str:
    return run_job_now(job_id, get_settings())


@worker_ready.connect
def _start_reaper(**_kwargs) -> None:
    """Re-send jobs lost by a dead worker (and other housekeeping, worker.reaper) at start-up and then
    periodically, from the main worker process."""
    settings = get_settings()
    stop = threading.Event()

    def loop() -> None:
        while True:
            reap(settings)
            if stop.wait(max(settings.stale_after_s / 2, 1.0)):
                return

    threading.Thread(target=loop, name="modelpress-reaper", daemon=True).start()


@worker_ready.connect
def _report_sandbox(**_kwargs) -> None:
    """Say once, at start-up, which isolations a job's process gets on this machine (and which it does not)."""
    def check() -> None:
        try:
            report = probe(get_settings()).isolation
        except Exception:  # the jobs themselves still run; each logs its own isolation report
            log.exception("could not start a sandboxed probe process")
            return
        skipped = skipped_isolations(report)
        log.log(logging.WARNING if skipped else logging.INFO, "job sandbox: %s%s", report,
                f"; NOT applied: {skipped}" if skipped else "")

    threading.Thread(target=check, name="modelpress-sandbox-probe", daemon=True).start()
