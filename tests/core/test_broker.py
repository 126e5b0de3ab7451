"""What the broker holds, read without consuming: waiting messages tell a queued job from a lost one, and the
embedded broker's consumed messages are deleted. Each test uses its own queue (the e2e worker consumes the real
one while these tests run)."""

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update


@pytest.fixture
def queue(backend) -> str:
    return f"modelpress-test-{uuid.uuid4().hex[:8]}"


def _send(job_id: str, queue: str) -> None:
    from core.queue import RUN_JOB, get_celery
    get_celery().send_task(RUN_JOB, args=[job_id], queue=queue)


def _take_and_die(queue: str) -> None:
    """Fetch one message as a worker does, then vanish without acknowledging or restoring it (a SIGKILL)."""
    from core.queue import get_celery
    with get_celery().connection_for_read() as connection:
        channel = connection.default_channel
        assert channel.basic_get(queue, no_ack=False) is not None
        channel.do_restore = False


def _age(job_id: str, seconds: float) -> None:
    from core.db.models import Job, utcnow
    from core.db.session import session_scope
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow() - timedelta(seconds=seconds)))


def test_a_waiting_message_is_seen_until_a_worker_takes_it(queue, job_id, backend):
    from core.broker import purge_consumed_messages, waiting_job_ids
    assert job_id not in waiting_job_ids(queue)
    _send(job_id, queue)
    _send("job_other", queue)
    assert waiting_job_ids(queue) == {job_id, "job_other"}
    _take_and_die(queue)
    assert waiting_job_ids(queue) == {"job_other"}
    consumed = purge_consumed_messages(queue)
    # The embedded broker keeps a consumed message as an invisible row forever; Redis drops it on ack.
    assert consumed == (1 if backend.name == "sqlite" else 0)
    assert purge_consumed_messages(queue) == 0 and waiting_job_ids(queue) == {"job_other"}


def test_a_queued_job_is_resent_only_when_its_message_is_gone_and_only_once(queue, job_id, settings):
    from core.jobs.state import requeue_lost_jobs
    _send(job_id, queue)
    _age(job_id, 700)
    assert job_id not in requeue_lost_jobs(settings, queued_grace_s=600, queues=(queue,))  # waiting behind others
    _take_and_die(queue)  # a worker took the message and died before claiming the job
    assert job_id in requeue_lost_jobs(settings, queued_grace_s=600, queues=(queue,))
    assert job_id not in requeue_lost_jobs(settings, queued_grace_s=600, queues=(queue,))  # re-sent once, not per round


def test_redis_serves_a_higher_priority_job_first(queue, backend):
    if backend.name == "sqlite":
        pytest.skip("the embedded broker serves in order of arrival")
    from core.queue import enqueue_job, get_celery
    enqueue_job("job_low", 60, queue, priority=1)
    enqueue_job("job_default", 60, queue, priority=5)
    enqueue_job("job_high", 60, queue, priority=9)
    with get_celery().connection_for_read() as connection:
        channel = connection.default_channel
        order = [channel.basic_get(queue, no_ack=True).decode()[0][0] for _ in range(3)]  # body: [args, ...]
    assert order == ["job_high", "job_default", "job_low"]


def test_a_backlog_in_any_queue_is_not_resent(job_id, settings):
    """The reaper looks for a queued job's message in every queue (here `gpu`, which no test worker consumes)."""
    from core.broker import waiting_job_ids
    from core.db.models import Job
    from core.db.session import session_scope
    from core.jobs.state import requeue_lost_jobs
    from core.queue import get_celery
    with get_celery().connection_for_write() as connection:
        connection.default_channel.queue_purge("gpu")  # what earlier tests sent there: ours must be the only one
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(queue="gpu"))
    _send(job_id, "gpu")
    _age(job_id, 700)
    assert job_id not in requeue_lost_jobs(settings, queued_grace_s=600)
    _take_and_die("gpu")
    assert job_id in requeue_lost_jobs(settings, queued_grace_s=600)
    assert job_id in waiting_job_ids(("gpu",))  # re-sent to the job's own queue
    _take_and_die("gpu")  # leave the queue as it was
