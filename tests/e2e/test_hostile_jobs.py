"""Hostile files that reached the store without the API's check (written straight into it) still never run: the
worker's loader refuses each, and the job fails with invalid_input naming the offending entry."""

import io
import time

import pytest

from tests.hostile.corpus import attacks

pytestmark = pytest.mark.e2e

# Bombs are refused by caps below the library defaults in tests/hostile; the worker here runs with the defaults.
ATTACKS = [attack for attack in attacks() if not attack.bomb]


def _store(kind: str, data: bytes, like_id: str) -> str:
    """Write `data` as a model/dataset of the same tenant, with the metadata of the clean upload `like_id`."""
    from app.db.models import Dataset, Model
    from app.db.session import session_scope
    from app.store.blobs import write_blob

    table = Model if kind == "model" else Dataset
    with session_scope() as session:
        clean = session.get(table, like_id)
        blob = write_blob(session, io.BytesIO(data), 1024**2)
        metadata = {"signature": clean.signature} if kind == "model" else {"manifest": clean.manifest}
        row = table(tenant_id=clean.tenant_id, name=f"hostile.{kind}", blob_id=blob.id, size_bytes=blob.size_bytes,
                    sha256=blob.sha256, **metadata)
        session.add(row)
        session.flush()
        return row.id


def test_jobs_on_hostile_files_fail_naming_the_entry(client, uploads, example_files, tmp_path):
    marker = tmp_path / "payload-ran"
    clean = {"model": example_files[0].read_bytes(), "dataset": example_files[1].read_bytes()}
    jobs = {}
    for attack in ATTACKS:
        stored = _store(attack.kind, attack.build(clean[attack.kind], marker), uploads[attack.kind]["id"])
        inputs = {"model_id": uploads["model"]["id"], "dataset_id": uploads["dataset"]["id"],
                  f"{attack.kind}_id": stored}
        jobs[attack.name] = client.submit_job({**inputs, "stages": [{"method": "ptq", "calibration_samples": 32}],
                                               "evaluation": {"latency": False}})["id"]
    # Generous: the session's worker may first work through jobs that earlier tests queued without one (about
    # 30 s for these jobs alone, several minutes behind that backlog on a loaded machine).
    deadline = time.monotonic() + 900
    pending = dict(jobs)
    while pending and time.monotonic() < deadline:
        for name, job_id in list(pending.items()):
            if client.job(job_id)["status"] in ("failed", "succeeded", "cancelled"):
                del pending[name]
        time.sleep(0.3)
    assert not pending, f"jobs still running: {sorted(pending)}"
    for attack in ATTACKS:
        job = client.job(jobs[attack.name])
        assert job["status"] == "failed", (attack.name, job)
        assert job["error"]["code"] == "invalid_input" and attack.entry in job["error"]["message"], (attack.name,
                                                                                                    job["error"])
    assert not marker.exists()
