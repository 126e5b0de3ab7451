"""Hostile files that reached the store without the API's check (written straight into it) still never run: the
worker's loader refuses each, and the job fails with invalid_input naming the offending entry."""

import time

import pytest

from modelpress.client import Client
from tests.hostile.corpus import attacks
from tests.hostile.slip_in import store_directly

# The worker's loader refuses the files whatever database or broker carried the job: once is enough.
pytestmark = [pytest.mark.e2e, pytest.mark.one_backend]

# Bombs are refused by caps below the library defaults in tests/hostile; the worker here runs with the defaults.
ATTACKS = [attack for attack in attacks() if not attack.bomb]
# Jobs in flight at once, below the per-tenant active-job quota.
WINDOW = 8


def test_jobs_on_hostile_files_fail_naming_the_entry(service, example_files, tmp_path):
    from tests.app.conftest import new_key

    client = Client(service.base_url, new_key())  # a tenant of its own: its jobs count against no one's quota
    marker = tmp_path / "payload-ran"
    clean = {"model": example_files[0].read_bytes(), "dataset": example_files[1].read_bytes()}
    uploads = {"model": client.upload_model(example_files[0]).info,
               "dataset": client.upload_dataset(example_files[1]).info}
    waiting, running, finished = list(ATTACKS), {}, {}
    # Generous: the session's worker may first work through jobs that earlier tests queued without one (about
    # 30 s for these jobs alone, several minutes behind that backlog on a loaded machine).
    deadline = time.monotonic() + 900
    while (waiting or running) and time.monotonic() < deadline:
        while waiting and len(running) < WINDOW:
            attack = waiting.pop(0)
            stored = store_directly(attack.kind, attack.build(clean[attack.kind], marker), uploads[attack.kind]["id"])
            inputs = {"model_id": uploads["model"]["id"], "dataset_id": uploads["dataset"]["id"],
                      f"{attack.kind}_id": stored}
            job = client.submit_job({**inputs, "stages": [{"method": "ptq", "calibration_samples": 32}],
                                     "evaluation": {"latency": False}})
            running[job["id"]] = attack
        for job_id in list(running):
            job = client.job(job_id)
            if job["status"] in ("failed", "succeeded", "cancelled"):
                finished[running.pop(job_id).name] = job
        time.sleep(0.3)
    assert not waiting and not running, f"jobs not finished: {[a.name for a in waiting + list(running.values())]}"
    for attack in ATTACKS:
        job = finished[attack.name]
        assert job["status"] == "failed", (attack.name, job)
        assert job["error"]["code"] == "invalid_input" and attack.entry in job["error"]["message"], (attack.name,
                                                                                                    job["error"])
    assert not marker.exists()
