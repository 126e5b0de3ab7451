"""Through HTTP, a real API and a real worker process: what a user does, and what must survive failures."""

import os
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.e2e


def _long_qat(uploads, steps=100_000, **training) -> dict:
    return {"model_id": uploads["model"]["id"], "dataset_id": uploads["dataset"]["id"],
            "stages": [{"method": "qat", "weight_bits": 4, "activation_bits": 8,
                        "training": {"steps": steps, "batch_size": 32, "lr": 1e-4, **training}}],
            "evaluation": {"latency": False, "max_samples": 200}}


def _weight_bytes(path) -> int:
    with zipfile.ZipFile(path) as archive:
        return sum(i.file_size for i in archive.infolist() if "/data/weights/weight_" in i.filename)


def _wait_for(client, job_id, condition, timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.job(job_id)
        if condition(job):
            return job
        assert job["status"] not in ("failed", "cancelled", "succeeded"), job
        time.sleep(0.2)
    raise AssertionError(f"condition not reached: {client.job(job_id)}")


def test_int8_ptq_job_from_upload_to_download(client, uploads, example_files, tmp_path):
    seen = []
    job = client.submit_job({"model_id": uploads["model"]["id"], "dataset_id": uploads["dataset"]["id"],
                             "stages": [{"method": "ptq", "calibration_samples": 256}],
                             "evaluation": {"compile": False, "latency_batch_sizes": [1, 8]}})
    job = client.wait(job["id"], timeout=300, poll=0.1, on_progress=lambda j: seen.append(j["progress"]))
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"]["fraction"] == 1.0
    overall = [p["overall"] for p in seen if "overall" in p]
    assert overall == sorted(overall)  # polled progress never goes back
    # A calibration this small can start and end between two polls; every new phase is in the job's log.
    messages = [line["message"] for line in client.logs(job["id"])["items"]]
    assert any(m.startswith("stage 0:ptq: calibrate") for m in messages), messages
    assert job["versions"]["torch"] == torch.__version__ and job["attempts"] == 1
    before, after = job["metrics"]["baseline"], job["metrics"]["final"]
    assert before["accuracy"] > 0.9 and after["accuracy"] > before["accuracy"] - 0.03
    assert set(after["latency_ms"]) == {"1", "8"}

    artifact = next(a for a in client.artifacts(job["id"]) if a["kind"] == "model.pt2")
    path = client.download(artifact, tmp_path / artifact["name"])  # checks the sha256
    assert path.stat().st_size == artifact["size_bytes"] == after["size_bytes"]
    assert artifact["size_bytes"] < uploads["model"]["size_bytes"]
    # On a model this small the graph description is most of the file; the weights themselves are int8.
    assert _weight_bytes(path) < _weight_bytes(example_files[0]) / 3
    model = torch.export.load(path).module()
    data = np.load(example_files[1], allow_pickle=False)
    with torch.no_grad():
        predictions = model(torch.from_numpy(data["val.x"])).argmax(1).numpy()
    assert abs((predictions == data["val.y"]).mean() - after["accuracy"]) < 1e-6


def test_a_job_can_start_from_an_earlier_jobs_result(client, uploads, cli, tmp_path):
    first = client.wait(client.submit_job(_long_qat(uploads, steps=20, warmup_steps=5))["id"], timeout=300)
    assert first["status"] == "succeeded", first["error"]
    # The child goes through the command line: submit, follow the event stream, download, read the job's log.
    submitted = cli("submit", first["id"], uploads["dataset"]["id"], "--method", "ptq",
                    "--set", "calibration_samples=64", "--set", "evaluation.latency=false",
                    "--download", str(tmp_path / "out"))
    assert submitted.returncode == 0, submitted.stderr
    child = client.job(submitted.stdout.split()[0])
    assert child["status"] == "succeeded", child["error"]
    assert child["parent_job_id"] == first["id"] and child["metrics"]["final"]["accuracy"] > 0.8
    # Overall progress across the baseline and the stage, over the event stream, reached 100 %.
    assert "succeeded" in submitted.stderr and "100%" in submitted.stderr, submitted.stderr
    [downloaded] = (tmp_path / "out").iterdir()  # the final model only: the default int8 recipe's .pt2
    assert downloaded.name == "model_int8.pt2"
    assert f"downloaded {downloaded} (sha256 verified)" in submitted.stderr

    logs = cli("logs", child["id"])
    assert logs.returncode == 0, logs.stderr
    for expected in ("attempt 1 started", "inputs fetched; running 1 stage(s): ptq", "stage 0:ptq: calibrate",
                     "job succeeded"):
        assert expected in logs.stdout, logs.stdout
    assert "/tmp/" not in logs.stdout and "site-packages" not in logs.stdout
    assert cli("cancel", child["id"]).returncode == 3  # already finished: the API's 409


def test_cancel_stops_a_running_job(client, uploads):
    job = client.submit_job(_long_qat(uploads))
    _wait_for(client, job["id"], lambda j: j["progress"].get("phase") == "train" and j["progress"]["step"] > 0)
    client.cancel(job["id"])
    job = client.wait(job["id"], timeout=60)
    assert job["status"] == "cancelled" and job["error"]["code"] == "cancelled"
    assert job["progress"]["step"] < job["progress"]["total"]


# The limit is enforced by the worker's clock, not by the database or broker: once is enough.
@pytest.mark.one_backend
def test_time_limit_fails_the_job_with_the_reason(client, uploads):
    job = client.submit_job({**_long_qat(uploads), "time_limit_s": 10})
    job = client.wait(job["id"], timeout=120)
    assert job["status"] == "failed" and job["error"]["code"] == "time_limit_exceeded"
    assert "10 s" in job["error"]["message"]


def test_a_killed_worker_does_not_lose_the_job_and_training_resumes(service, client, uploads):
    job = client.submit_job(_long_qat(uploads, steps=300, checkpoint_every=25))
    _wait_for(client, job["id"], lambda j: j["progress"].get("phase") == "train" and j["progress"]["step"] > 60,
              timeout=180)
    sandboxed = _processes_working_on(job["id"])
    assert sandboxed, "the job runs in a child process of the worker, in the job's scratch directory"
    service.kill_worker()
    deadline = time.monotonic() + 10
    while any(map(_alive, sandboxed)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, sandboxed)), "the job's process outlived its worker"
    service.start_worker()
    job = client.wait(job["id"], timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    assert job["metrics"]["stages"][0]["metrics"]["method_metrics"]["train"]["resumed_from_step"] >= 50


def _processes_working_on(job_id: str) -> list[int]:
    """Processes whose working directory is one of the job's scratch directories (named after the job)."""
    found = []
    for cwd in Path("/proc").glob("[0-9]*/cwd"):
        try:
            if job_id in os.readlink(cwd):
                found.append(int(cwd.parent.name))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_nothing_is_orphaned_in_the_store_after_failures_kills_and_deletes(service, example_files):
    """After the jobs above (failed, cancelled, killed with their worker) and a tenant deleting all it owns, the
    store check counts 0. Bytes are stored before the row that names them is committed, so a worker killed in
    between leaves an object without a row (in staging, or under its sha256 if the kill came after publishing),
    never a row without its bytes; the periodic sweep removes such objects."""
    import hashlib

    import httpx

    from core.config import get_settings
    from core.store import get_store
    from core.store.base import tenant_prefix
    from core.store.lifecycle import find_orphans, sweep
    from modelpress.cli import main
    from modelpress.client import Client
    from tests.app.conftest import new_key
    from tests.app.test_tenant_data import _tenant_of
    key = new_key()
    tenant = Client(service.base_url, key)
    tenant.upload_model(example_files[0])
    dataset = tenant.upload_resumable(example_files[1], "dataset", part_bytes=1024**2)
    assert dataset.info["sha256"] == hashlib.sha256(example_files[1].read_bytes()).hexdigest()
    assert len(list(get_store().list(tenant_prefix(_tenant_of(key))))) == 2  # the parts are gone
    deleted = httpx.delete(f"{service.base_url}/v1/tenant/data", headers={"Authorization": f"Bearer {key}"})
    assert deleted.status_code == 200 and deleted.json()["models"] == deleted.json()["datasets"] == 1
    assert list(get_store().list(tenant_prefix(_tenant_of(key)))) == []

    orphans = find_orphans()
    assert orphans.rows == [], "a blob row whose bytes are gone"
    sweep(get_settings().model_copy(update={"store_sweep_grace_s": 0}))
    assert find_orphans().counts() == {"objects_without_rows": 0, "rows_without_objects": 0,
                                       "unused_blob_rows": 0}
    assert main(["store", "check"]) == 0
