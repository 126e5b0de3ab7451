"""Celery entry point: `celery -A worker.tasks worker` (or `modelpress worker`)."""

from __future__ import annotations

import logging
import threading
import time

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from core import workers
from core.config import get_settings
from core.db.migrate import ensure_schema
from core.db.session import get_engine
from core.jobs.state import park
from core.queue import CPU_QUEUE, DELIVER_WEBHOOK, RUN_JOB, get_celery, send_webhook
from core.store.lifecycle import run as store_lifecycle
from worker.capacity import detect_capacity
from worker.compile_cache import zygote_probe_dir
from worker.reaper import reap
from worker.runner import run_job as run_job_now
from worker.runner import versions
from worker.sandbox import base_environment, probe, skipped_isolations
from worker.spawner import zygote
from worker.webhooks import deliver_job_webhook, webhook_wanted

log = logging.getLogger(__name__)
celery = get_celery()
_settings = get_settings()
# Refuse to start on an unmigrated database (the embedded default migrates itself).
ensure_schema(get_engine(), _settings.resolved_database_url, _settings.should_auto_migrate)
# A job's claim records the versions it ran with, which imports torch: done here, before the pool processes are
# forked, they inherit it, and the first job after start-up does not wait for the import (bench/queue_latency.py,
# first job submitted as the API came up, on a busy 2-core machine: 9-18 s before, 5-7 s after). Importing torch
# does not initialise CUDA.
versions()


@worker_process_init.connect
def _fresh_connections(**_kwargs) -> None:
    """A forked pool process must not share the parent's database connections."""
    get_engine().dispose(close=False)


@worker_process_init.connect
def _start_zygote(**_kwargs) -> None:
    """Let the pool process's zygote import torch and the library now, before its first job (worker.zygote);
    from this, the pool process's main thread, which runs its jobs and lives as long as it does."""
    settings = get_settings()
    zygote(base_environment(settings), zygote_probe_dir(settings))


@celery.task(name=RUN_JOB, bind=True)
def run_job(self, job_id: str) -> str:
    settings = get_settings()
    reason, queue = workers.unfit_reason(job_id, self.request.hostname)
    if reason:
        log.info("job %s not started here: %s", job_id, reason)
        return "parked" if park(job_id, reason) else "skipped"
    if queue == CPU_QUEUE:  # a GPU worker that also consumes the cpu queue runs those jobs on its CPU
        settings = settings.model_copy(update={"device": "cpu"})
    status = run_job_now(job_id, settings)
    if webhook_wanted(job_id):
        send_webhook(job_id)
    return status


@celery.task(name=DELIVER_WEBHOOK)
def deliver_webhook(job_id: str, attempt: int) -> str | None:
    return deliver_job_webhook(job_id, attempt, get_settings())


@worker_ready.connect
def _register(sender, **_kwargs) -> None:
    """Advertise this worker (device, memory, queues) and keep its heartbeat fresh until it stops."""
    settings = get_settings()
    name = sender.hostname
    queues = sorted(sender.app.amqp.queues.consume_from)
    concurrency = sender.controller.concurrency

    def loop() -> None:
        capacity = detect_capacity(settings)
        log.info("worker %s: %s, %.1f GiB, queues %s", name, capacity.device, capacity.memory_bytes / 2**30, queues)
        registered = False
        while not _stopping.is_set():
            try:
                if not registered or not workers.beat(name):
                    workers.register(name, capacity.device, capacity.memory_bytes, queues, concurrency)
                registered = True
            except Exception:  # the database may be away for a moment; the next beat tries again
                log.exception("worker registry heartbeat failed")
            _stopping.wait(settings.heartbeat_interval_s)

    threading.Thread(target=loop, name="modelpress-registry", daemon=True).start()


_stopping = threading.Event()


@worker_shutdown.connect
def _unregister(sender, **_kwargs) -> None:
    _stopping.set()
    try:
        workers.unregister(sender.hostname)
    except Exception:  # a stale row stops counting as live after worker_stale_after_s anyway
        log.exception("could not remove this worker from the registry")


@worker_ready.connect
def _start_reaper(**_kwargs) -> None:
    """Re-send jobs lost by a dead worker (and other housekeeping, worker.reaper) at start-up and then
    periodically, from the main worker process; the store's lifecycle task (core.store.lifecycle) less often."""
    settings = get_settings()
    stop = threading.Event()

    def loop() -> None:
        lifecycle_due = 0.0
        while True:
            reap(settings)
            if time.monotonic() >= lifecycle_due:
                store_lifecycle(settings)
                lifecycle_due = time.monotonic() + settings.store_sweep_interval_s
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
