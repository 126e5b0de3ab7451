from tests.app.conftest import new_key


def test_health_needs_no_key_but_everything_else_does(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": True, "broker": True}
    for method, route in [("get", "/v1/models"), ("get", "/v1/datasets"), ("get", "/v1/jobs"),
                          ("get", "/v1/jobs/job_x"), ("post", "/v1/jobs/job_x/cancel"), ("get", "/v1/artifacts/a")]:
        response = getattr(api, method)(route)
        assert response.status_code == 401, route
        assert response.json()["error"] == "unauthorized"
        assert "modelpress keys create" in response.json()["detail"]


def test_unknown_key_is_refused(api):
    response = api.get("/v1/models", headers={"Authorization": "Bearer mp_not-a-key"})
    assert response.status_code == 401
    assert response.json()["detail"] == "unknown or revoked API key"


def test_keys_are_stored_hashed(api):
    from sqlalchemy import select

    from core.db.models import ApiKey
    from core.db.session import session_scope
    key = new_key("hash-check")
    with session_scope() as session:
        hashes = session.scalars(select(ApiKey.key_hash)).all()
    assert key not in hashes and all(len(h) == 64 for h in hashes)


def test_tenants_see_only_their_own_resources(api, uploaded, auth):
    other = {"X-API-Key": new_key()}
    model_id, dataset_id = uploaded["model"]["id"], uploaded["dataset"]["id"]
    job = api.post("/v1/jobs", headers=auth, json={"model_id": model_id, "dataset_id": dataset_id,
                                                   "stages": [{"method": "ptq"}]})
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    for route in [f"/v1/models/{model_id}", f"/v1/datasets/{dataset_id}", f"/v1/jobs/{job_id}",
                  f"/v1/jobs/{job_id}/artifacts"]:
        assert api.get(route, headers=other).status_code == 404, route
        assert api.get(route, headers=auth).status_code == 200, route
    assert api.delete(f"/v1/models/{model_id}", headers=other).status_code == 404
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=other).status_code == 404
    assert all(m["id"] != model_id for m in api.get("/v1/models", headers=other).json()["items"])
    assert api.get("/v1/jobs", headers=other).json()["total"] == 0
    stolen = api.post("/v1/jobs", headers=other, json={"model_id": model_id, "dataset_id": dataset_id,
                                                       "stages": [{"method": "ptq"}]})
    assert stolen.status_code == 422 and "not found" in stolen.json()["detail"]
