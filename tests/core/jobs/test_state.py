from datetime import timedelta

from sqlalchemy import update


def _job(job_id):
    from core.db.models import Job
    from core.db.session import session_scope
    with session_scope() as session:
        return session.get(Job, job_id)


def _set(job_id, **values):
    from core.db.models import Job
    from core.db.session import session_scope
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def test_a_job_is_claimed_once(job_id):
    from core.config import get_settings
    from core.jobs.state import claim
    settings = get_settings()
    assert claim(job_id, "w1", settings, {"torch": "x"})
    assert not claim(job_id, "w2", settings, {})  # redelivered message: the running owner keeps it
    job = _job(job_id)
    assert (job.status, job.worker, job.attempts, job.versions) == ("running", "w1", 1, {"torch": "x"})


def test_cancelled_or_finished_jobs_are_not_claimed(job_id):
    from core.config import get_settings
    from core.jobs.state import claim
    _set(job_id, cancel_requested=True)
    assert not claim(job_id, "w1", get_settings(), {})
    _set(job_id, cancel_requested=False, status="succeeded")
    assert not claim(job_id, "w1", get_settings(), {})


def test_a_running_job_with_a_stale_heartbeat_is_reclaimed_and_requeued(job_id):
    from core.config import get_settings
    from core.db.models import utcnow
    from core.jobs.state import beat, claim, requeue_lost_jobs
    settings = get_settings()
    assert claim(job_id, "dead-worker", settings, {})
    beat(job_id, "dead-worker")
    assert job_id not in requeue_lost_jobs(settings)  # fresh heartbeat: still owned
    _set(job_id, heartbeat_at=utcnow() - timedelta(seconds=settings.stale_after_s + 5))
    assert job_id in requeue_lost_jobs(settings)
    assert claim(job_id, "new-worker", settings, {})
    job = _job(job_id)
    assert (job.worker, job.attempts) == ("new-worker", 2)


def test_queued_jobs_whose_message_may_be_lost_are_requeued(job_id):
    from core.config import get_settings
    from core.db.models import utcnow
    from core.jobs.state import requeue_lost_jobs
    _set(job_id, enqueued_at=utcnow())
    assert job_id not in requeue_lost_jobs(get_settings(), queued_grace_s=600)
    _set(job_id, enqueued_at=utcnow() - timedelta(seconds=700))
    assert job_id in requeue_lost_jobs(get_settings(), queued_grace_s=600)
    assert (utcnow() - _job(job_id).enqueued_at).total_seconds() < 60  # not re-sent again next round
