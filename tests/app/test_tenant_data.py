import hashlib
import io

from tests.app.conftest import new_key


def _tenant_of(key: str) -> str:
    from sqlalchemy import select

    from app.auth.service import hash_key
    from core.db.models import ApiKey
    from core.db.session import session_scope
    with session_scope() as session:
        return session.scalar(select(ApiKey.tenant_id).where(ApiKey.key_hash == hash_key(key)))


def _finished_job_with_artifact(tenant_id: str, model_id: str, dataset_id: str, data: bytes) -> str:
    from core.db.models import Artifact, Job, JobCheckpoint, utcnow
    from core.db.session import session_scope
    from core.store.blobs import write_blob
    with session_scope() as session:
        job = Job(tenant_id=tenant_id, model_id=model_id, dataset_id=dataset_id, spec={}, time_limit_s=60,
                  status="failed", finished_at=utcnow())
        session.add(job)
        session.flush()
        blob = write_blob(session, tenant_id, io.BytesIO(data))
        session.add_all([Artifact(tenant_id=tenant_id, job_id=job.id, stage_index=0, name="a", kind="model.pt2",
                                  blob_id=blob.id, size_bytes=len(data), sha256=blob.sha256, details={}),
                         JobCheckpoint(job_id=job.id, name="0:qat/train", blob_id=blob.id)])
        return job.id


def test_a_tenant_deletes_everything_it_owns_and_only_that(store, api, example_files):
    from core.store.base import tenant_prefix
    from core.store.lifecycle import find_orphans
    model_path, dataset_path = example_files
    keys = [new_key(), new_key()]
    tenants = [_tenant_of(key) for key in keys]
    for key, tenant in zip(keys, tenants):  # both tenants store the same bytes
        auth = {"Authorization": f"Bearer {key}"}
        model = api.post("/v1/models", headers=auth, files={"file": ("m.pt2", model_path.read_bytes())}).json()
        dataset = api.post("/v1/datasets", headers=auth, files={"file": ("d.npz", dataset_path.read_bytes())}).json()
        _finished_job_with_artifact(tenant, model["id"], dataset["id"], b"artifact bytes")
        queued = api.post("/v1/jobs", headers=auth, json={"model_id": model["id"], "dataset_id": dataset["id"],
                                                          "stages": [{"method": "ptq"}]})
        assert queued.status_code == 201, queued.text
        upload = api.post("/v1/uploads", headers=auth, json={"kind": "model", "name": "big.pt2", "size_bytes": 10,
                                                              "sha256": "0" * 64}).json()
        assert api.put(f"/v1/uploads/{upload['id']}/parts/0", content=b"0123456789",
                       headers={**auth, "X-Checksum-SHA256": hashlib.sha256(b"0123456789").hexdigest()}
                       ).status_code == 200
    before = [sorted(o.key for o in store.list(tenant_prefix(t))) for t in tenants]
    assert len(before[0]) == 4  # model, dataset, artifact (= checkpoint), one upload part

    auth = {"Authorization": f"Bearer {keys[0]}"}
    deleted = api.delete("/v1/tenant/data", headers=auth)
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"jobs": 2, "models": 1, "datasets": 1, "uploads": 1}
    assert list(store.list(tenant_prefix(tenants[0]))) == []
    for listing in ("/v1/models", "/v1/datasets", "/v1/jobs"):
        assert api.get(listing, headers=auth).json()["total"] == 0  # and the key still works
    assert sorted(o.key for o in store.list(tenant_prefix(tenants[1]))) == before[1]
    for tenant in tenants:
        assert find_orphans(tenant_id=tenant).counts() == {"objects_without_rows": 0, "rows_without_objects": 0,
                                                           "unused_blob_rows": 0}
    assert api.delete("/v1/tenant/data", headers={"Authorization": f"Bearer {keys[1]}"}).status_code == 200


def test_running_jobs_are_asked_to_stop_first(api, auth, uploaded):
    from sqlalchemy import update

    from core.db.models import Job
    from core.db.session import session_scope
    job = api.post("/v1/jobs", headers=auth, json={"model_id": uploaded["model"]["id"],
                                                   "dataset_id": uploaded["dataset"]["id"],
                                                   "stages": [{"method": "ptq"}]}).json()
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job["id"]).values(status="running", worker="w"))
    refused = api.delete("/v1/tenant/data", headers=auth)
    assert refused.status_code == 409 and "asked to stop" in refused.json()["detail"]
    assert api.get(f"/v1/jobs/{job['id']}", headers=auth).json()["cancel_requested"] is True
    with session_scope() as session:  # the worker stops it
        session.execute(update(Job).where(Job.id == job["id"]).values(status="cancelled"))
    assert api.delete("/v1/tenant/data", headers=auth).json()["jobs"] == 1
