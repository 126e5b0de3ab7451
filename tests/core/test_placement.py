"""A worker starts only jobs that fit its memory; a job that does not is parked with its reason and sent again
once a worker that fits it is live."""

import uuid

from sqlalchemy import update

GIB = 1024**3


def load_job(job_id: str):
    from core.db.models import Job
    from core.db.session import session_scope
    with session_scope() as session:
        return session.get(Job, job_id)


def test_a_job_too_large_for_this_worker_is_parked_and_resent_when_a_larger_one_is_live(job_id, settings):
    from core import workers
    from core.broker import waiting_job_ids
    from core.db.models import Job
    from core.db.session import session_scope
    from core.jobs.state import park, requeue_lost_jobs
    from core.workers import unfit_reason
    queue = f"placement-{uuid.uuid4().hex[:8]}"  # no service worker consumes it
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(queue=queue, memory_bytes=10 * GIB))
    small, large = f"small-{uuid.uuid4().hex[:6]}@test", f"large-{uuid.uuid4().hex[:6]}@test"
    workers.register(small, "gpu", 8 * GIB, [queue], 1)
    try:
        assert unfit_reason(job_id, "unregistered@test") == (None, queue)  # memory unknown: it may try
        reason, _ = unfit_reason(job_id, small)
        assert "10.0 GiB" in reason and "8.0 GiB" in reason
        assert park(job_id, reason)
        parked = load_job(job_id)
        assert (parked.status, parked.enqueued_at, parked.waiting_reason) == ("queued", None, reason)
        assert job_id not in requeue_lost_jobs(settings, queues=(queue,))  # still no worker that fits
        workers.register(large, "gpu", 80 * GIB, [queue], 1)
        assert unfit_reason(job_id, large) == (None, queue)
        assert job_id in requeue_lost_jobs(settings, queues=(queue,))
        assert job_id in waiting_job_ids((queue,)) and load_job(job_id).enqueued_at is not None
        assert job_id not in requeue_lost_jobs(settings, queues=(queue,))  # sent once
    finally:
        workers.unregister(small)
        workers.unregister(large)
