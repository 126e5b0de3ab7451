"""The registry of running workers: each advertises its device, memory and queues and beats a heartbeat.

The API reads it to route a job to a queue some worker can run it from, and to say why a job waits; a worker
reads its own row to check that a job fits before it claims it. A worker that stopped beating for
`worker_stale_after_s` is not live: its row stays (so a fleet that is down for a moment is still known) until
it has been silent for `worker_forget_after_s`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Job, Worker, utcnow
from core.db.session import session_scope
from core.queue import CPU_QUEUE


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    device: str
    memory_bytes: int
    queues: tuple[str, ...]
    concurrency: int
    heartbeat_age_s: float

    def fits(self, memory_bytes: int | None) -> bool:
        return memory_bytes is None or memory_bytes <= self.memory_bytes


def register(name: str, device: str, memory_bytes: int, queues: list[str], concurrency: int) -> None:
    """Insert or refresh this worker's row (a restarted worker keeps its name and takes the row over)."""
    now = utcnow()
    with session_scope() as session:
        row = session.get(Worker, name)
        if row is None:
            session.add(Worker(name=name, device=device, memory_bytes=memory_bytes, queues={"names": queues},
                               concurrency=concurrency, started_at=now, heartbeat_at=now))
        else:
            row.device, row.memory_bytes, row.queues = device, memory_bytes, {"names": queues}
            row.concurrency, row.started_at, row.heartbeat_at = concurrency, now, now


def beat(name: str) -> bool:
    """Refresh the heartbeat; False when the row is gone (forgotten after a long pause), so the caller
    registers again."""
    with session_scope() as session:
        return session.execute(update(Worker).where(Worker.name == name).values(heartbeat_at=utcnow())).rowcount == 1


def unregister(name: str) -> None:
    with session_scope() as session:
        session.execute(delete(Worker).where(Worker.name == name))


def known_workers(session: Session, settings: Settings) -> list[WorkerInfo]:
    """Every registered worker that beat within `worker_forget_after_s` (older rows are deleted here)."""
    now = utcnow()
    session.execute(delete(Worker).where(
        Worker.heartbeat_at < now - timedelta(seconds=settings.worker_forget_after_s)))
    rows = session.scalars(select(Worker).order_by(Worker.name)).all()
    return [WorkerInfo(row.name, row.device, row.memory_bytes, tuple(row.queues.get("names", ())),
                       row.concurrency, max((now - row.heartbeat_at).total_seconds(), 0.0)) for row in rows]


def live_workers(session: Session, settings: Settings) -> list[WorkerInfo]:
    return [worker for worker in known_workers(session, settings)
            if worker.heartbeat_age_s <= settings.worker_stale_after_s]


def get_worker(session: Session, name: str) -> Worker | None:
    return session.get(Worker, name)


def heartbeat_ages(settings: Settings) -> dict[str, float]:
    """Seconds since each known worker's last heartbeat, by worker name, for metrics."""
    with session_scope() as session:
        return {worker.name: worker.heartbeat_age_s for worker in known_workers(session, settings)}


def unfit_reason(job_id: str, worker_name: str) -> tuple[str | None, str]:
    """Why this worker must not start the job (it needs more memory than the worker advertises), or None; and
    the job's queue. A worker not (yet) in the registry takes any job: its memory is not known."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        me = get_worker(session, worker_name)
        needs, queue = (job.memory_bytes, job.queue) if job else (None, CPU_QUEUE)
        has = me.memory_bytes if me else None
    if needs is None or has is None or needs <= has:
        return None, queue
    return (f"needs about {needs / 2**30:.1f} GiB; worker {worker_name} has {has / 2**30:.1f} GiB, so it waits "
            "for a worker with enough memory"), queue
