import hashlib
import io
import os

import pytest

from core.db.models import Artifact


@pytest.fixture
def artifact(api, auth, uploaded) -> tuple[str, bytes]:
    """An artifact stored the way the worker stores one, on a job of this tenant."""
    from core.db.models import Artifact, Job
    from core.db.session import session_scope
    from core.store.blobs import write_blob
    job_id = api.post("/v1/jobs", headers=auth, json={
        "model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
        "stages": [{"method": "ptq"}]}).json()["id"]
    data = os.urandom(3 * 1024 + 17)
    with session_scope() as session:
        job = session.get(Job, job_id)
        blob = write_blob(session, job.tenant_id, io.BytesIO(data))
        row = Artifact(tenant_id=job.tenant_id, job_id=job_id, stage_index=0, name="model_int8.pt2",
                       kind="model.pt2", blob_id=blob.id, size_bytes=blob.size_bytes, sha256=blob.sha256,
                       details={})
        session.add(row)
        session.flush()
        artifact_id = row.id
    listed = api.get(f"/v1/jobs/{job_id}/artifacts", headers=auth).json()
    assert [a["id"] for a in listed] == [artifact_id] and listed[0]["download_url"] == f"/v1/artifacts/{artifact_id}"
    return artifact_id, data


def test_download_whole_file_with_checksum(api, auth, artifact):
    artifact_id, data = artifact
    response = api.get(f"/v1/artifacts/{artifact_id}", headers=auth)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["X-Checksum-SHA256"] == hashlib.sha256(data).hexdigest()
    assert response.headers["Content-Length"] == str(len(data))
    assert 'filename="model_int8.pt2"' in response.headers["Content-Disposition"]


@pytest.mark.parametrize("header, start, end", [
    ("bytes=0-9", 0, 9), ("bytes=1000-2100", 1000, 2100), ("bytes=3000-", 3000, 3 * 1024 + 16),
    ("bytes=-20", 3 * 1024 - 3, 3 * 1024 + 16), ("bytes=10-99999", 10, 3 * 1024 + 16),
])
def test_range_requests(api, auth, artifact, header, start, end):
    artifact_id, data = artifact
    response = api.get(f"/v1/artifacts/{artifact_id}", headers={**auth, "Range": header})
    assert response.status_code == 206
    assert response.content == data[start:end + 1]
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(data)}"
    assert response.headers["Content-Length"] == str(end - start + 1)


@pytest.mark.parametrize("header", ["bytes=5000-", "bytes=9-3", "chars=0-1", "bytes=-"])
def test_unsatisfiable_ranges_give_416(api, auth, artifact, header):
    response = api.get(f"/v1/artifacts/{artifact[0]}", headers={**auth, "Range": header})
    assert response.status_code == 416 and response.json()["error"] == "range_not_satisfiable"


@pytest.mark.parametrize("header", ["bytes=" + "9" * 4301 + "-", "bytes=0-" + "9" * 4301, "bytes=-" + "9" * 4301,
                                    "bytes=" + "1" * 19 + "-"])
def test_range_positions_too_long_for_int_give_416(api, auth, artifact, header):
    response = api.get(f"/v1/artifacts/{artifact[0]}", headers={**auth, "Range": header})
    assert response.status_code == 416, response.text
    assert response.json()["error"] == "range_not_satisfiable" and "18 digits" in response.json()["detail"]


def test_a_finished_job_can_be_deleted_with_its_artifacts(api, auth, artifact):
    from core.db.models import Blob
    from core.db.session import session_scope
    artifact_id, _ = artifact
    job_id = api.get("/v1/jobs", headers=auth).json()["items"][0]["id"]
    refused = api.delete(f"/v1/jobs/{job_id}", headers=auth)
    assert refused.status_code == 409 and "cancel it" in refused.json()["detail"]
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=auth).json()["status"] == "cancelled"
    with session_scope() as session:
        blob_id = session.get(Artifact, artifact_id).blob_id
    assert api.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 204
    assert api.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 404
    assert api.get(f"/v1/artifacts/{artifact_id}", headers=auth).status_code == 404
    with session_scope() as session:
        assert session.get(Blob, blob_id) is None


def test_a_store_that_presigns_answers_with_a_redirect(store, api, auth, uploaded):
    """S3: 307 to a presigned URL that serves the bytes (and ranges) without our key; local: streamed."""
    import httpx

    from core.db.models import Job
    from core.db.session import session_scope
    from core.store.blobs import write_blob
    job_id = api.post("/v1/jobs", headers=auth, json={
        "model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
        "stages": [{"method": "ptq"}]}).json()["id"]
    data = os.urandom(2048)
    with session_scope() as session:
        job = session.get(Job, job_id)
        blob = write_blob(session, job.tenant_id, io.BytesIO(data))
        row = Artifact(tenant_id=job.tenant_id, job_id=job_id, stage_index=0, name="m.pt2", kind="model.pt2",
                       blob_id=blob.id, size_bytes=blob.size_bytes, sha256=blob.sha256, details={})
        session.add(row)
    response = api.get(f"/v1/artifacts/{row.id}", headers=auth, follow_redirects=False)
    assert response.headers["X-Checksum-SHA256"] == hashlib.sha256(data).hexdigest()
    if store.url.startswith("file:"):
        assert response.status_code == 200 and response.content == data
    else:
        assert response.status_code == 307
        direct = httpx.get(response.headers["location"])
        assert direct.status_code == 200 and direct.content == data
        assert httpx.get(response.headers["location"], headers={"Range": "bytes=10-19"}).content == data[10:20]
    # The uploads live in this test's store: the tenant takes everything with it.
    assert api.delete("/v1/tenant/data", headers=auth).json()["jobs"] == 1
    assert list(store.list(f"tenants/{job.tenant_id}/")) == []
