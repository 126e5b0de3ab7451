"""Idempotency-Key on POST /v1/jobs, /v1/models and /v1/datasets: a retry returns the first result."""

import threading
import uuid
from datetime import timedelta

import pytest


def _key() -> str:
    return str(uuid.uuid4())


def _spec(uploaded, **overrides) -> dict:
    return {"model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
            "stages": [{"method": "ptq"}], **overrides}


def _count(api, auth, route: str) -> int:
    return api.get(route, headers=auth).json()["total"]


def test_a_retried_job_submission_returns_the_first_job(api, auth, uploaded):
    headers = {**auth, "Idempotency-Key": _key()}
    first = api.post("/v1/jobs", headers=headers, json=_spec(uploaded))
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    # The same request, written differently (key order, whitespace): still the same request.
    retry = api.post("/v1/jobs", headers={**headers, "Content-Type": "application/json"},
                     content=f'{{ "stages": [{{"method": "ptq"}}], "dataset_id": "{uploaded["dataset"]["id"]}",'
                             f'  "model_id": "{uploaded["model"]["id"]}" }}')
    assert retry.status_code == 201 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    assert _count(api, auth, "/v1/jobs") == 1
    another = api.post("/v1/jobs", headers={**auth, "Idempotency-Key": _key()}, json=_spec(uploaded))
    assert another.status_code == 201 and another.json()["id"] != first.json()["id"]


def test_a_key_used_for_another_request_is_refused(api, auth, uploaded):
    key = _key()
    headers = {**auth, "Idempotency-Key": key}
    assert api.post("/v1/jobs", headers=headers, json=_spec(uploaded)).status_code == 201
    changed = api.post("/v1/jobs", headers=headers, json=_spec(uploaded, seed=7))
    assert changed.status_code == 422 and changed.json()["error"] == "idempotency_key_reused"
    assert "a different request to POST /v1/jobs" in changed.json()["detail"]
    elsewhere = api.post("/v1/datasets", headers=headers, files={"file": ("d.npz", b"PK")})
    assert elsewhere.status_code == 422 and "for POST /v1/jobs" in elsewhere.json()["detail"]
    assert _count(api, auth, "/v1/jobs") == 1


def test_keys_belong_to_a_tenant(api, auth, uploaded):
    from tests.app.conftest import new_key
    key = _key()
    mine = api.post("/v1/jobs", headers={**auth, "Idempotency-Key": key}, json=_spec(uploaded))
    other = {"Authorization": f"Bearer {new_key()}", "Idempotency-Key": key}
    theirs = api.post("/v1/jobs", headers=other, json=_spec(uploaded))
    assert mine.status_code == 201
    assert theirs.status_code == 422 and "model_id: " in theirs.json()["detail"]  # their own attempt, not a replay


def test_a_failed_request_keeps_no_claim_on_its_key(api, auth, uploaded):
    headers = {**auth, "Idempotency-Key": _key()}
    failed = api.post("/v1/jobs", headers=headers, json=_spec(uploaded, stages=[{"method": "ptq",
                                                                                  "calibration_split": "nope"}]))
    assert failed.status_code == 422
    fixed = api.post("/v1/jobs", headers=headers, json=_spec(uploaded))
    assert fixed.status_code == 201 and "Idempotent-Replayed" not in fixed.headers


def test_a_retried_upload_returns_the_first_model(api, auth, example_files):
    data = example_files[0].read_bytes()
    headers = {**auth, "Idempotency-Key": _key()}
    first = api.post("/v1/models", headers=headers, files={"file": ("m.pt2", data)})
    retry = api.post("/v1/models", headers=headers, files={"file": ("m.pt2", data)})
    assert first.status_code == retry.status_code == 201 and retry.json() == first.json()
    assert _count(api, auth, "/v1/models") == 1
    different_file = api.post("/v1/models", headers=headers, files={"file": ("m.pt2", data[:-1] + b"!")})
    assert different_file.status_code == 422 and different_file.json()["error"] == "idempotency_key_reused"


def test_a_retried_upload_is_replayed_even_when_the_quota_is_now_used(api, auth, monkeypatch):
    from core.config import get_settings
    from tests.app.test_limits import _npz
    data = _npz(100)
    headers = {**auth, "Idempotency-Key": _key()}
    first = api.post("/v1/datasets", headers=headers, files={"file": ("d.npz", data)})
    monkeypatch.setattr(get_settings(), "quota_stored_bytes", len(data))
    retry = api.post("/v1/datasets", headers=headers, files={"file": ("d.npz", data)})
    assert first.status_code == retry.status_code == 201 and retry.json() == first.json()


def test_expired_keys_start_over(api, auth, uploaded):
    from sqlalchemy import update

    from core.db.models import IdempotencyRecord, utcnow
    from core.db.session import session_scope
    key = _key()
    first = api.post("/v1/jobs", headers={**auth, "Idempotency-Key": key}, json=_spec(uploaded)).json()
    with session_scope() as session:
        session.execute(update(IdempotencyRecord).where(IdempotencyRecord.key == key)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    again = api.post("/v1/jobs", headers={**auth, "Idempotency-Key": key}, json=_spec(uploaded, seed=3))
    assert again.status_code == 201 and again.json()["id"] != first["id"]


@pytest.mark.parametrize("key", [b"", b"x" * 256, "naïve".encode(), b"two words"])
def test_malformed_keys_are_refused(api, auth, uploaded, key):
    response = api.post("/v1/jobs", headers={**auth, "Idempotency-Key": key}, json=_spec(uploaded))
    assert response.status_code == 422 and "Idempotency-Key must be" in response.json()["detail"]


def test_concurrent_requests_with_one_key_create_one_resource(api, auth, uploaded, example_files):
    data = example_files[0].read_bytes()
    requests = {"/v1/jobs": lambda headers: api.post("/v1/jobs", headers=headers, json=_spec(uploaded)),
                "/v1/models": lambda headers: api.post("/v1/models", headers=headers,
                                                       files={"file": ("m.pt2", data)})}
    for route, send in requests.items():
        headers = {**auth, "Idempotency-Key": _key()}
        barrier = threading.Barrier(4)
        responses = []

        def racer():
            barrier.wait()
            responses.append(send(headers))

        threads = [threading.Thread(target=racer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r.status_code for r in responses] == [201] * 4, [r.text for r in responses]
        assert len({r.json()["id"] for r in responses}) == 1
        assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 3
        before = 1 if route == "/v1/models" else 0  # the `uploaded` fixture's model
        assert _count(api, auth, route) == before + 1


def test_a_request_waiting_on_a_key_in_progress_gets_409(api, auth, uploaded, backend, monkeypatch):
    if backend.name == "sqlite":
        pytest.skip("SQLite has one writer: a held transaction blocks every write, not just this key's row")
    from sqlalchemy import update

    from app.auth.service import tenant_for_key
    from app.core.idempotency import json_fingerprint
    from core.config import get_settings
    from core.db.models import IdempotencyRecord, Tenant, utcnow
    from core.db.session import session_scope
    from core.jobs.spec import JobCreate
    monkeypatch.setattr(get_settings(), "idempotency_wait_s", 0.3)
    key = _key()
    spec = _spec(uploaded)
    with session_scope() as session:  # another request holding the key, not yet committed
        tenant: Tenant = tenant_for_key(session, auth["Authorization"].split()[1])
        session.add(IdempotencyRecord(tenant_id=tenant.id, key=key, endpoint="POST /v1/jobs",
                                      fingerprint=json_fingerprint(JobCreate.model_validate(spec)),
                                      expires_at=utcnow() + timedelta(hours=1)))
        session.flush()
        waiting = api.post("/v1/jobs", headers={**auth, "Idempotency-Key": key}, json=spec)
        assert waiting.status_code == 409 and waiting.headers["Retry-After"] == "2"
        assert "still in progress" in waiting.json()["detail"]
        session.execute(update(IdempotencyRecord).where(IdempotencyRecord.key == key).values(
            response_status=201, response_body={"id": "job_0123456789abcdef"}))
    retry = api.post("/v1/jobs", headers={**auth, "Idempotency-Key": key}, json=spec)
    assert retry.status_code == 201 and retry.json() == {"id": "job_0123456789abcdef"}
    assert _count(api, auth, "/v1/jobs") == 0
