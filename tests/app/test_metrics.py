"""GET /metrics: Prometheus text with request counters by route template and job figures from the database."""

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics_count_requests_by_route_and_jobs_by_status(api, auth, uploaded):
    import uuid

    from core import workers
    worker = f"metrics-{uuid.uuid4().hex[:6]}@test"
    workers.register(worker, "cpu", 2 * 1024**3, ["cpu"], 1)
    spec = {"model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
            "stages": [{"method": "ptq"}]}
    assert api.post("/v1/jobs", headers=auth, json=spec).status_code == 201
    api.get("/v1/jobs/job_doesnotexist", headers=auth)
    response = api.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert found[("modelpress_http_requests_total",
                  (("method", "GET"), ("route", "/v1/jobs/{job_id}"), ("status", "404")))] >= 1
    assert not [key for key in found if "job_doesnotexist" in str(key)], "ids never become labels"
    assert found[("modelpress_jobs", (("status", "queued"),))] >= 1
    assert found[("modelpress_queue_depth", ())] >= 1
    assert found[("modelpress_queued_jobs", (("queue", "cpu"),))] >= 1
    assert 0 <= found[("modelpress_worker_heartbeat_age_seconds", (("device", "cpu"), ("worker", worker)))] < 60
    workers.unregister(worker)
    assert ("modelpress_job_duration_seconds_count", (("status", "succeeded"),)) in found
    assert ("modelpress_http_request_duration_seconds_count", (("method", "POST"), ("route", "/v1/jobs"))) in found


def test_metrics_token_is_required_when_set(api, monkeypatch):
    from core.config import get_settings
    monkeypatch.setenv("MODELPRESS_METRICS_TOKEN", "s3cret")
    get_settings.cache_clear()
    try:
        assert api.get("/metrics").status_code == 401
        assert api.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert api.get("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    finally:
        monkeypatch.delenv("MODELPRESS_METRICS_TOKEN")
        get_settings.cache_clear()
