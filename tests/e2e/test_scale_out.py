"""Three worker processes on PostgreSQL + Redis: every job runs exactly once, and the job of a worker killed
mid-run finishes on another. The full fifty-job version is bench/scale_out.py."""

import os
import time

import pytest

from modelpress.demo import _free_port

pytestmark = pytest.mark.e2e
CHEAP_JOBS = 6


def _cheap(uploads) -> dict:
    return {"model_id": uploads["model"]["id"], "dataset_id": uploads["dataset"]["id"],
            "stages": [{"method": "ptq", "calibration_samples": 32}],
            "evaluation": {"latency": False, "compile": False, "max_samples": 64}}


def _slow(uploads) -> dict:
    return {"model_id": uploads["model"]["id"], "dataset_id": uploads["dataset"]["id"],
            "stages": [{"method": "qat", "weight_bits": 4, "activation_bits": 8,
                        "training": {"steps": 100, "batch_size": 32, "lr": 1e-4, "checkpoint_every": 50}}],
            "evaluation": {"latency": False, "compile": False, "max_samples": 64}}


def _until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not reached in {timeout} s: {what}")


def _live_cpu_workers() -> list[str]:
    from core.config import get_settings
    from core.db.session import session_scope
    from core.workers import live_workers
    with session_scope() as session:
        return [w.name for w in live_workers(session, get_settings()) if "cpu" in w.queues]


def test_three_workers_run_each_job_once_and_finish_the_job_of_a_killed_one(backend, request):
    if backend.name == "sqlite":
        pytest.skip("scale-out runs on PostgreSQL + Redis (set MODELPRESS_TEST_DATABASE_URL and _BROKER_URL)")
    service, client, uploads = (request.getfixturevalue(name) for name in ("service", "client", "uploads"))
    extra = [service._spawn("worker", "--name", f"scale{index}-{_free_port()}@%h") for index in range(2)]
    try:
        _until(lambda: len(_live_cpu_workers()) >= 3, 90, "three live workers in the registry")
        slow = client.submit_job(_slow(uploads))["id"]
        running = _until(lambda: (lambda j: j["status"] == "running" and j["progress"].get("step", 0) > 0 and j)(
            client.job(slow)), 120, "the slow job training")
        cheap = [client.submit_job(_cheap(uploads))["id"] for _ in range(CHEAP_JOBS)]
        from core.db.models import Job
        from core.db.session import session_scope
        with session_scope() as session:
            first_runner = session.get(Job, slow).worker
        victim = int(first_runner.rsplit(":", 1)[1])  # a job's `worker` is its Celery worker's host:pid
        killed = next((p for p in [*extra, service.worker] if p.pid == victim), None)
        assert killed is not None, f"{first_runner} runs under none of our workers"
        if killed is service.worker:
            service.kill_worker()
        else:
            os.killpg(killed.pid, 9)
            killed.wait()
        assert running["attempts"] == 1
        finished = {job_id: client.wait(job_id, timeout=180, poll=0.3) for job_id in [slow, *cheap]}
        assert {job["status"] for job in finished.values()} == {"succeeded"}, [
            (j["id"], j["error"]) for j in finished.values() if j["status"] != "succeeded"]
        assert [finished[job_id]["attempts"] for job_id in cheap] == [1] * CHEAP_JOBS  # each claimed once
        assert finished[slow]["attempts"] == 2
        with session_scope() as session:
            assert session.get(Job, slow).worker != first_runner  # finished by another worker process
    finally:
        for process in extra:
            if process.poll() is None:
                os.killpg(process.pid, 15)
                process.wait(30)
        if service.worker.poll() is not None:
            service.start_worker()
