import io
import time

from sqlalchemy import update

from compression.context import ProgressEvent


def test_progress_is_throttled_but_stage_changes_and_the_end_are_written(job_id, monkeypatch):
    from core.db.models import Job
    from core.db.session import session_scope
    from core.jobs import state
    from worker.reporting import ProgressWriter
    writes = []
    real_write = state.write_progress

    def counting_write(job, progress):
        writes.append(1)
        real_write(job, progress)

    monkeypatch.setattr("worker.reporting.write_progress", counting_write)
    phases = []
    writer = ProgressWriter(job_id, interval=60, stage_count=2, on_phase=phases.append)
    for step in range(1, 1001):
        writer(ProgressEvent("0:qat", "train", step, 1000, {"loss": 0.5}))
    writer(ProgressEvent("1:ptq", "calibrate", 1, 10))
    assert len(writes) == 3  # first event, the final step of the stage, the new stage
    assert [(p.stage, p.phase) for p in phases] == [("0:qat", "train"), ("1:ptq", "calibrate")]
    with session_scope() as session:
        progress = session.get(Job, job_id).progress
    # Overall: the baseline and each of the two stages are a third; stage 1 is a tenth through calibration,
    # the first 15 % of its third.
    assert progress == {"stage": "1:ptq", "phase": "calibrate", "step": 1, "total": 10, "fraction": 0.1,
                        "overall": round((2 + 0.015) / 3, 4), "metrics": {}}
    writer(ProgressEvent("1:ptq", "export", 1, 1))
    assert round(writer.overall, 4) == round((2 + 0.7) / 3, 4)
    writer(ProgressEvent("1:ptq", "calibrate", 0, 1))
    assert round(writer.overall, 4) == round((2 + 0.7) / 3, 4)  # a phase starting again does not go back
    writer(ProgressEvent("1:ptq", "latency", 1, 2))
    assert round(writer.overall, 4) == 0.9667


def test_stop_check_sees_cancel_and_deadline(job_id):
    from core.db.models import Job
    from core.db.session import session_scope
    from worker.reporting import StopCheck
    check = StopCheck(job_id, deadline=time.monotonic() + 60, interval=0)
    assert check() is None
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    assert check() == "cancelled"
    assert StopCheck(job_id, deadline=time.monotonic() - 1)() == "time_limit_exceeded"


def test_checkpoints_keep_only_the_latest(job_id):
    from core.config import get_settings
    from worker.storage import CheckpointStore
    store = CheckpointStore(job_id, get_settings())
    assert store.load("train") is None
    store.save("train", io.BytesIO(b"a" * 3000))
    store.save("train", io.BytesIO(b"b" * 10))
    assert store.load("train") == b"b" * 10
    store.clear()
    assert store.load("train") is None
