"""/metrics of the real API (several uvicorn processes): request counts from every process reach each scrape."""

import httpx
import pytest

from tests.app.test_metrics import samples

pytestmark = pytest.mark.e2e
HEALTH = ("modelpress_http_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200")))


def test_request_counts_add_up_across_api_processes(service):
    with httpx.Client(base_url=service.base_url, timeout=30) as http:
        before = samples(http.get("/metrics").text).get(HEALTH, 0)
        # New connections spread over the uvicorn processes; every one of them must be counted.
        for _ in range(20):
            with httpx.Client(base_url=service.base_url, timeout=30) as fresh:
                assert fresh.get("/healthz").status_code == 200
        after = samples(http.get("/metrics").text)
    assert after[HEALTH] - before == 20
    assert ("modelpress_jobs", (("status", "running"),)) in after
