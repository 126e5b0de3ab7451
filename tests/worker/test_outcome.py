"""Recording a job's outcome: one transaction, only by the owning worker, and nothing left of earlier attempts."""

import io
import signal
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from tests.worker.conftest import load_job


def _set(job_id, **values):
    from core.db.models import Job
    from core.db.session import session_scope
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def _rows(model, **where) -> int:
    from core.db.session import session_scope
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model).filter_by(**where))


def _blobs(job_id: str) -> int:
    """The blobs of the job's tenant: a worker other tests left running sweeps other tenants' unused blobs."""
    from core.db.models import Blob, Job
    from core.db.session import session_scope
    with session_scope() as session:
        tenant_id = session.get(Job, job_id).tenant_id
    return _rows(Blob, tenant_id=tenant_id)


def _stale(job_id, settings):
    from core.db.models import utcnow
    _set(job_id, heartbeat_at=utcnow() - timedelta(seconds=settings.stale_after_s + 5))


def _report(tmp_path) -> "object":
    from worker.outcome import Outcome
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "report.json").write_text('{"ok": true}')
    artifact = {"stage_index": 0, "name": "report.json", "kind": "report.json", "details": {},
                "file": "out/report.json"}
    return Outcome("succeeded", metrics={"final": {"accuracy": 0.9}}, artifacts=[artifact])


def test_only_the_worker_that_owns_the_running_job_can_finish_it(job_id, settings, tmp_path):
    from core.db.models import Artifact
    from core.jobs.state import claim
    from worker.outcome import finish
    assert claim(job_id, "w1", settings, {})
    _stale(job_id, settings)  # w1 looks dead ...
    assert claim(job_id, "w2", settings, {})  # ... so w2 runs the job again
    blobs = _blobs(job_id)
    assert finish(job_id, "w1", _report(tmp_path), settings, tmp_path) == "lost"
    job = load_job(job_id)
    assert (job.status, job.worker, job.metrics) == ("running", "w2", {})
    assert _rows(Artifact, job_id=job_id) == 0 and _blobs(job_id) == blobs  # not a byte of w1's outcome

    assert finish(job_id, "w2", _report(tmp_path), settings, tmp_path) == "succeeded"
    job = load_job(job_id)
    assert (job.status, job.metrics) == ("succeeded", {"final": {"accuracy": 0.9}})
    assert _rows(Artifact, job_id=job_id) == 1
    assert finish(job_id, "w2", _report(tmp_path), settings, tmp_path) == "lost"  # finished jobs stay finished
    assert _rows(Artifact, job_id=job_id) == 1


def test_an_artifact_that_cannot_be_stored_leaves_the_job_running_for_the_failure_that_follows(job_id, settings,
                                                                                             tmp_path):
    from core.db.models import Artifact
    from core.jobs.state import claim
    from worker.outcome import Outcome, finish
    from worker.scratch import UnsafeOutput
    assert claim(job_id, "w1", settings, {})
    outcome = _report(tmp_path)
    (tmp_path / "secret").write_text("not the job's")
    (tmp_path / "out" / "link").symlink_to(tmp_path / "secret")
    outcome.artifacts.append({**outcome.artifacts[0], "name": "link", "file": "out/link"})
    with pytest.raises(UnsafeOutput):
        finish(job_id, "w1", outcome, settings, tmp_path)
    assert load_job(job_id).status == "running" and _rows(Artifact, job_id=job_id) == 0
    assert finish(job_id, "w1", Outcome.failed("internal_error", "x"), settings) == "failed"


def test_a_reclaimed_job_starts_without_the_earlier_attempts_artifacts(job_id, settings):
    from core.db.models import Artifact, Job
    from core.db.session import session_scope
    from core.jobs.state import claim
    from core.store.blobs import write_blob
    assert claim(job_id, "w1", settings, {})
    blobs = _blobs(job_id)
    with session_scope() as session:  # what an attempt stored before it died (code before atomic outcomes)
        job = session.get(Job, job_id)
        blob = write_blob(session, job.tenant_id, io.BytesIO(b"partial"))
        session.add(Artifact(tenant_id=job.tenant_id, job_id=job_id, stage_index=0, name="a", kind="model.pt2",
                             blob_id=blob.id, size_bytes=7, sha256=blob.sha256, details={}))
    _stale(job_id, settings)
    assert claim(job_id, "w2", settings, {})
    assert _rows(Artifact, job_id=job_id) == 0 and _blobs(job_id) == blobs


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_failed_and_cancelled_jobs_delete_their_checkpoints(job_id, settings, status):
    from core.db.models import JobCheckpoint
    from core.jobs.state import claim
    from worker.outcome import Outcome, finish
    from worker.storage import CheckpointStore
    blobs = _blobs(job_id)
    assert claim(job_id, "w1", settings, {})
    store = CheckpointStore(job_id, settings)
    store.save("0:qat/train", io.BytesIO(b"state" * 100))
    store.save("1:kd/train", io.BytesIO(b"more"))
    assert _rows(JobCheckpoint, job_id=job_id) == 2 and _blobs(job_id) == blobs + 2
    assert finish(job_id, "w1", Outcome(status, status, "why"), settings) == status
    assert _rows(JobCheckpoint, job_id=job_id) == 0 and _blobs(job_id) == blobs


def test_the_reaper_deletes_checkpoints_of_jobs_cancelled_while_queued(job_id, settings):
    from core.db.models import JobCheckpoint
    from worker.reaper import delete_finished_checkpoints
    from worker.storage import CheckpointStore
    blobs = _blobs(job_id)
    CheckpointStore(job_id, settings).save("0:qat/train", io.BytesIO(b"state"))
    delete_finished_checkpoints()
    assert _rows(JobCheckpoint, job_id=job_id) == 1  # the job may still run and resume from it
    _set(job_id, status="cancelled")
    assert delete_finished_checkpoints() >= 1
    assert _rows(JobCheckpoint, job_id=job_id) == 0 and _blobs(job_id) == blobs


def _exit(**fields):
    from worker.sandbox import ChildExit
    return ChildExit(**{"limits": {"address_space": 2 * 1024**3, "cpu_seconds": 100, "open_files": 64,
                                   "file_bytes": 1024**2}, **fields})


@pytest.mark.parametrize("run, expected", [
    (dict(returncode=-signal.SIGXCPU), ("resource_limit", "CPU time limit of 100 (MODELPRESS_SANDBOX_CPU_SECONDS")),
    (dict(returncode=-signal.SIGKILL), ("resource_limit", "out of memory")),
    (dict(returncode=-signal.SIGSEGV, output_tail="Fatal Python error"), ("internal_error", "SIGSEGV")),
    (dict(returncode=1, output_tail="ModuleNotFoundError: x"), ("internal_error", "ModuleNotFoundError: x")),
    (dict(returncode=-signal.SIGKILL, stop_reason="cancelled", killed=True), ("cancelled", "cancelled by the user")),
    (dict(returncode=1, stop_reason="time_limit_exceeded", error={"code": "invalid_input", "message": "m"}),
     ("time_limit_exceeded", "time limit of 60 s")),
    (dict(returncode=1, error={"code": "out_of_memory", "gpu": True, "message": "ran out of GPU memory"}),
     ("invalid_input", "ran out of GPU memory")),
    (dict(returncode=1, error={"code": "resource_limit", "limit": "open_files", "message": "m"}),
     ("resource_limit", "open files limit of 64 (MODELPRESS_SANDBOX_MAX_OPEN_FILES=64)")),
    (dict(returncode=1, error={"code": "root_please", "message": "m"}), ("internal_error", "unknown error")),
    (dict(returncode=0, result={"metrics": {}, "artifacts": [{"file": "/etc/passwd"}]}),
     ("internal_error", "malformed result")),
    (dict(returncode=0, protocol_error="a message longer than 16 bytes"), ("internal_error", "broke the protocol")),
])
def test_how_the_child_ended_becomes_the_jobs_error(run, expected):
    from worker.outcome import outcome_from_child
    outcome = outcome_from_child(_exit(**run), time_limit_s=60, stage_count=1)
    assert outcome.code == expected[0] and expected[1] in outcome.message, outcome.message


def test_a_failed_job_keeps_the_metrics_measured_before_it_failed(job_id, settings):
    from core.jobs.state import claim
    from worker.outcome import finish, outcome_from_child
    measured = {"baseline": {"metric": "top1_agreement", "metric_points": 100.0}, "stages": [], "warnings": []}
    error = {"code": "invalid_input", "message": "stage 0 (ipq) dropped top1_agreement by 99.80 points",
             "metrics": measured}
    outcome = outcome_from_child(_exit(returncode=1, error=error), time_limit_s=60, stage_count=1)
    assert (outcome.status, outcome.metrics) == ("failed", measured)
    assert outcome_from_child(_exit(returncode=1, error={**error, "metrics": "x"}), 60, 1).metrics is None
    assert claim(job_id, "w1", settings, {})
    assert finish(job_id, "w1", outcome, settings) == "failed"
    assert load_job(job_id).metrics == measured


def test_a_replaced_checkpoint_is_released_only_after_the_new_one_is_committed(job_id, settings):
    from core.db.models import Blob, JobCheckpoint
    from core.db.session import session_scope
    from core.store import get_store
    from core.store.blobs import key_of
    from worker.storage import CheckpointStore
    store = CheckpointStore(job_id, settings)
    store.save("0:qat/train", io.BytesIO(b"first state"))
    with session_scope() as session:
        first = session.get(JobCheckpoint, (job_id, "0:qat/train")).blob_id
        first_key = key_of(session.get(Blob, first))
    store.save("0:qat/train", io.BytesIO(b"second state"))
    with session_scope() as session:
        assert session.get(JobCheckpoint, (job_id, "0:qat/train")).blob_id != first
        assert session.get(Blob, first) is None
    assert not get_store().exists(first_key)
    assert store.load("0:qat/train") == b"second state"
    store.save("0:qat/train", io.BytesIO(b"second state"))  # the same bytes: the blob stays
    assert store.load("0:qat/train") == b"second state"


def test_a_checkpoint_whose_object_is_gone_is_skipped_and_its_stage_starts_over(make_job, settings, tmp_path):
    from core.db.models import Blob, Job, JobCheckpoint
    from core.db.session import session_scope
    from core.jobs.spec import JobCreate
    from core.store import get_store
    from core.jobs.artifacts import delete_job
    from core.store.blobs import key_of
    from worker.messages import checkpoint_file
    from worker.storage import CheckpointStore, fetch_inputs
    job_id = make_job([{"method": "ptq"}])
    store = CheckpointStore(job_id, settings)
    store.save("0:qat/train", io.BytesIO(b"lost state"))
    store.save("1:kd/train", io.BytesIO(b"kept state"))
    with session_scope() as session:
        lost = session.get(Blob, session.get(JobCheckpoint, (job_id, "0:qat/train")).blob_id)
        get_store().delete(key_of(lost))  # what a worker killed inside the old save left behind
        job = session.get(Job, job_id)
        files = fetch_inputs(job, JobCreate.model_validate(job.spec), tmp_path)
    checkpoints = tmp_path / files["checkpoints"]
    assert not (checkpoints / checkpoint_file("0:qat/train")).exists()
    assert (checkpoints / checkpoint_file("1:kd/train")).read_bytes() == b"kept state"
    with session_scope() as session:  # the row without its object would fail later tests' store checks
        delete_job(session, session.get(Job, job_id))
