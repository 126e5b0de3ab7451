"""Housekeeping: what a killed worker leaves behind in its scratch root."""

import os
import time

from sqlalchemy import update


def test_scratch_left_by_a_killed_worker_is_removed_once_its_job_is_not_running(job_id, settings, tmp_path):
    from core.db.models import Job
    from core.db.session import session_scope
    from worker.reaper import remove_abandoned_scratch
    ours = settings.model_copy(update={"sandbox_scratch_dir": tmp_path})
    left, other_service, fresh = tmp_path / f"{job_id}-aaa", tmp_path / "job_unknown-bbb", tmp_path / f"{job_id}-ccc"
    probe = tmp_path / "probe-ddd"
    for path in (left, other_service, fresh, probe):
        (path / "inputs").mkdir(parents=True)
    hour_ago = time.time() - 3600
    for path in (left, other_service, probe):
        os.utime(path, (hour_ago, hour_ago))
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="running"))
    assert remove_abandoned_scratch(ours) == 1 and left.exists()  # its job may still be running here
    assert not probe.exists()  # a probe of a worker killed meanwhile
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="queued"))
    assert remove_abandoned_scratch(ours) == 1
    assert not left.exists() and other_service.exists() and fresh.exists()
