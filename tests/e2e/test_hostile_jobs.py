"""Hostile files that reached the store without the API's check (written straight into it) still never run: the
worker's loader refuses each, and the job fails with invalid_input naming the offending entry."""

import io
import time

import pytest

from modelpress.client import Client
from tests.hostile.corpus import attacks

pytestmark = pytest.mark.e2e

# Bombs are refused by caps below the library defaults in tests/hostile; the worker here runs with the defaults.
ATTACKS = [attack for attack in attacks() if not attack.bomb]
# Jobs in flight at once, below the per-tenant active-job quota.
WINDOW = 8


def _store(kind: str, data: bytes, like_id: str) -> str:
    """Write `data` as a model/dataset of the same tenant, with the metadata of the clean upload `like_id`."""
    from core.db.models import Dataset, Model
    from core.db.session import session_scope
    from core.store.blobs import write_blob

    table = Model if kind == "model" else Dataset
    with session_scope() as session:
        clean = session.get(table, like_id)
        blob = write_blob(session, clean.tenant_id, io.BytesIO(data))
        metadata = {"signature": clean.signature} if kind == "model" else {"manifest": clean.manifest}
        row = table(tenant_id=clean.tenant_id, name=f"hostile.{kind}", blob_id=blob.id, size_bytes=blob.size_bytes,
                    sha256=blob.sha256, **metadata)
        session.add(row)
        session.flush()
        return row.id


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
            stored = _store(attack.kind, attack.build(clean[attack.kind], marker), uploads[attack.kind]["id"])
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
