"""The Celery application as the API sees it: configuration and enqueueing by task name, no task code.

The worker registers the task on this same app; the API never imports the worker (and so never imports torch).
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache, partial

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as sqlalchemy_transport
from sqlalchemy.engine import make_url

from core.config import Settings, get_settings

RUN_JOB = "modelpress.run_job"
DELIVER_WEBHOOK = "modelpress.deliver_webhook"
# One queue per kind of worker: a CPU worker consumes `cpu`, a GPU worker `gpu` (and `cpu` too if told so).
CPU_QUEUE, GPU_QUEUE = "cpu", "gpu"
QUEUES = (CPU_QUEUE, GPU_QUEUE)
# Redis serves priority 0 first; ten steps give each priority its own list.
REDIS_PRIORITY_STEPS = list(range(10))


def make_celery(settings: Settings) -> Celery:
    celery = Celery("modelpress", broker=settings.resolved_broker_url)
    transport_options = {}
    if settings.resolved_broker_url.startswith("sqla+sqlite"):
        broker_file = make_url(settings.resolved_broker_url.removeprefix("sqla+")).database
        transport_options = {"creator": partial(_embedded_broker_connection, broker_file)}
    elif settings.resolved_broker_url.startswith("redis"):
        # Unacked messages come back after this long; it must exceed the longest job or it would run twice.
        transport_options = {"visibility_timeout": settings.job_time_limit_s + 600,
                             "priority_steps": REDIS_PRIORITY_STEPS}
    celery.conf.update(
        task_default_queue=CPU_QUEUE,
        task_acks_late=True,  # a job's message is acknowledged only when the job has finished ...
        task_reject_on_worker_lost=True,  # ... and is redelivered if the worker process dies
        worker_prefetch_multiplier=1,  # a worker holds one job at a time; others stay available to other workers
        task_ignore_result=True,  # state lives in the jobs table
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        worker_hijack_root_logger=False,
    )
    return celery


class EmbeddedBrokerTransport(sqlalchemy_transport.Transport):
    """kombu's SQLAlchemy transport, polled every `embedded_broker_poll_s`. Its transport options all go to
    `create_engine`, so the interval cannot be passed as one; the `sqla` scheme is pointed at this class."""

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        self.polling_interval = get_settings().embedded_broker_poll_s


TRANSPORT_ALIASES["sqla"] = TRANSPORT_ALIASES["sqlalchemy"] = f"{__name__}:EmbeddedBrokerTransport"


def _embedded_broker_connection(path: str) -> sqlite3.Connection:
    """A connection to the embedded broker's SQLite file, in WAL mode with synchronous=NORMAL.

    SQLite's defaults (rollback journal, an fsync per commit) held job submissions to about 60/s: each enqueue
    waited for the previous one's journal writes. A message lost to a power cut is re-sent by the worker's
    reaper, as any lost message is."""
    connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL").close()
    connection.execute("PRAGMA synchronous=NORMAL").close()
    return connection


@lru_cache
def get_celery() -> Celery:
    return make_celery(get_settings())


def enqueue_job(job_id: str, time_limit_s: int, queue: str = CPU_QUEUE, priority: int = 0) -> None:
    """Send a job's run message to `queue`. `priority` is ours (0-9, higher runs first among waiting jobs);
    Redis honours it, the embedded broker serves in order of arrival."""
    # The hard limit is a backstop: the job itself stops at its time limit through the library's cancellation.
    get_celery().send_task(RUN_JOB, args=[job_id], time_limit=time_limit_s + 300, queue=queue,
                           priority=9 - priority)


def send_webhook(job_id: str, attempt: int = 1, countdown: float = 0) -> None:
    get_celery().send_task(DELIVER_WEBHOOK, args=[job_id, attempt], countdown=countdown or None)


def broker_reachable() -> bool:
    try:
        with get_celery().connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=3)
        return True
    except Exception:  # any failure to connect means "not ready"; the reason is not the probe's business
        return False
