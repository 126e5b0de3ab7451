"""The worker registry and the figures others read from it: liveness, heartbeat ages, queue depths."""

import uuid
from datetime import timedelta

from sqlalchemy import update


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}@host"


def _age(name: str, seconds: float) -> None:
    from core.db.models import Worker, utcnow
    from core.db.session import session_scope
    with session_scope() as session:
        session.execute(update(Worker).where(Worker.name == name).values(
            heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def test_a_worker_is_live_while_it_beats_known_for_a_while_and_then_forgotten(backend):
    from core import workers
    from core.config import get_settings
    from core.db.session import session_scope
    settings = get_settings().model_copy(update={"worker_stale_after_s": 30, "worker_forget_after_s": 3600})
    name = _name()
    workers.register(name, "gpu", 80 * 2**30, ["gpu", "cpu"], 1)
    with session_scope() as session:
        (me,) = [w for w in workers.live_workers(session, settings) if w.name == name]
    assert (me.device, me.memory_bytes, me.queues, me.concurrency) == ("gpu", 80 * 2**30, ("gpu", "cpu"), 1)
    _age(name, 120)
    assert 119 < workers.heartbeat_ages(settings)[name] < 180
    with session_scope() as session:
        assert name not in {w.name for w in workers.live_workers(session, settings)}
        assert name in {w.name for w in workers.known_workers(session, settings)}
    assert workers.beat(name) and workers.heartbeat_ages(settings)[name] < 60
    _age(name, 7200)
    assert name not in workers.heartbeat_ages(settings)
    assert not workers.beat(name)  # its row is gone: the worker registers again
    workers.register(name, "cpu", 2**30, ["cpu"], 2)
    workers.unregister(name)
    assert name not in workers.heartbeat_ages(settings)


def test_queue_depths_count_waiting_messages_per_queue(backend):
    from core.broker import queue_depths
    from core.queue import RUN_JOB, get_celery
    queues = (f"depth-a-{uuid.uuid4().hex[:6]}", f"depth-b-{uuid.uuid4().hex[:6]}")
    for job_id in ("job_1", "job_2"):
        get_celery().send_task(RUN_JOB, args=[job_id], queue=queues[0], priority=3)
    assert queue_depths(queues) == {queues[0]: 2, queues[1]: 0}
