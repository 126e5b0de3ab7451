"""Overload is answered 503 with Retry-After, never a 500 or a timeout, and a refused job is never created.

These start a real API process (one uvicorn worker) with tiny limits set through settings and send it bursts of
concurrent requests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from contextlib import contextmanager

import httpx

from app.demo import _free_port, wait_ready
from tests.app.conftest import new_key

BURST = 40


@contextmanager
def api_process(tmp_path, **settings: str):
    env = {**os.environ, "MODELPRESS_API_WORKERS": "1", "MODELPRESS_API_ACCESS_LOG": "false",
           **{f"MODELPRESS_{name.upper()}": value for name, value in settings.items()}}
    port = _free_port()
    with open(tmp_path / "api.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "app.cli", "api", "--port", str(port)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://127.0.0.1:{port}", processes=[process])
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(20)


async def _burst(base_url: str, headers: dict, method: str, path: str, json: dict | None = None
                 ) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=60) as client:
        return await asyncio.gather(*(client.request(method, path, json=json) for _ in range(BURST)))


def _check_overloaded(responses: list[httpx.Response], ok: int) -> list[httpx.Response]:
    assert {r.status_code for r in responses} <= {ok, 503}, [r.text for r in responses if r.status_code
                                                             not in (ok, 503)]
    refused = [r for r in responses if r.status_code == 503]
    for response in refused:
        assert response.headers["Retry-After"] == "1"
        assert response.json()["error"] == "overloaded"
        assert "retry" in response.json()["detail"]
    return refused


def test_a_full_queue_answers_503_and_refused_jobs_do_not_exist(backend, auth, uploaded, tmp_path):
    spec = {"model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
            "stages": [{"method": "ptq"}], "evaluation": {"latency": False}}
    with api_process(tmp_path, api_max_in_flight="1", api_max_queued="0") as base_url:
        responses = asyncio.run(_burst(base_url, auth, "POST", "/v1/jobs", spec))
        refused = _check_overloaded(responses, 201)
        created = [r.json()["id"] for r in responses if r.status_code == 201]
        assert refused and created
        held = httpx.get(f"{base_url}/v1/jobs", params={"limit": 200}, headers=auth).json()
        assert sorted(job["id"] for job in held["items"]) == sorted(created)
        for job_id in created:  # no worker here; leave nothing for the end-to-end tests' worker to run
            assert httpx.post(f"{base_url}/v1/jobs/{job_id}/cancel", headers=auth).status_code == 200

        for path in ("/healthz", "/readyz"):  # an overloaded process is still alive and ready
            assert {r.status_code for r in asyncio.run(_burst(base_url, {}, "GET", path))} == {200}


def test_no_free_database_connection_answers_503(backend, tmp_path):
    headers = {"Authorization": f"Bearer {new_key()}"}
    with api_process(tmp_path, db_pool_size="1", db_pool_timeout_s="0.001", api_max_in_flight="16") as base_url:
        refused = []
        for _ in range(10):  # each burst makes 16 requests race for one connection; one burst nearly always does
            refused += _check_overloaded(asyncio.run(_burst(base_url, headers, "GET", "/v1/jobs")), 200)
            if refused:
                break
        assert refused, "no request waited for the pool's single connection"
        assert "database connection" in refused[0].json()["detail"]


def test_slots_are_granted_in_arrival_order_and_a_cancelled_waiter_leaves_none_behind():
    from app.core.overload import Slots

    async def scenario() -> None:
        slots = Slots(1)
        assert await slots.acquire(1)
        order = []

        async def waiter(name: str) -> None:
            assert await slots.acquire(5)
            order.append(name)
            slots.release()

        first, second = asyncio.create_task(waiter("first")), asyncio.create_task(waiter("second"))
        leaver = asyncio.create_task(slots.acquire(5))
        await asyncio.sleep(0.01)
        leaver.cancel()
        assert not await slots.acquire(0.01)  # timed out behind the others, and left the queue
        slots.release()
        await asyncio.gather(first, second)
        assert order == ["first", "second"]
        assert slots.busy == 0 and not slots.waiters

    asyncio.run(scenario())
