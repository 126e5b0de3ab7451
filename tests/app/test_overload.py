"""Overload is answered 503 with Retry-After, never a 500 or a timeout, and a refused job is never created.

These start a real API process (one uvicorn worker) with tiny limits set through settings and send it bursts of
concurrent requests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx

from modelpress.demo import _free_port
from tests.app.conftest import new_key

BURST = 40


@contextmanager
def api_process(tmp_path, **settings: str):
    env = {**os.environ, "MODELPRESS_API_WORKERS": "1", "MODELPRESS_API_ACCESS_LOG": "false",
           **{f"MODELPRESS_{name.upper()}": value for name, value in settings.items()}}
    port = _free_port()
    with open(tmp_path / "api.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "modelpress.cli", "api", "--port", str(port)], env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_alive(f"http://127.0.0.1:{port}", process)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(20)


def _wait_alive(base_url: str, process: subprocess.Popen, timeout_s: float = 60) -> None:
    # /healthz rather than /readyz: one test runs the API with its broker unreachable on purpose.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"the API at {base_url} did not start; see its log")


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


def test_a_job_whose_enqueue_fails_after_commit_is_answered_201(backend, auth, uploaded, tmp_path):
    """The row is committed before the enqueue; failing the request then would hide a job that exists (the
    worker's reaper re-sends queued jobs whose message never arrived)."""
    spec = {"model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
            "stages": [{"method": "ptq"}]}
    with api_process(tmp_path, broker_url=f"redis://127.0.0.1:{_free_port()}/0") as base_url:
        created = httpx.post(f"{base_url}/v1/jobs", json=spec, headers=auth, timeout=60)
        assert created.status_code == 201, created.text
        job = httpx.get(f"{base_url}/v1/jobs/{created.json()['id']}", headers=auth).json()
        assert job["status"] == "queued"
        assert httpx.post(f"{base_url}/v1/jobs/{job['id']}/cancel", headers=auth).status_code == 200


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


def test_event_streams_take_no_request_slot_and_have_their_own_cap():
    from app.core.overload import OverloadGuard

    async def scenario() -> None:
        opened, release = asyncio.Event(), asyncio.Event()

        async def app(scope, receive, send) -> None:  # a stream that lasts until released
            if scope["path"].endswith("/events"):
                opened.set()
                await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        guard = OverloadGuard(app, max_in_flight=1, max_queued=0, queue_timeout_s=0.01, max_streams=1)
        statuses = []

        async def send(message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        def request(path):
            return guard({"type": "http", "path": path}, None, send)

        stream = asyncio.create_task(request("/v1/jobs/job_1/events"))
        await opened.wait()
        await request("/v1/jobs/job_1")  # the open stream holds no request slot
        await request("/v1/jobs/job_2/events")  # but streams are capped
        release.set()
        await stream
        assert statuses == [200, 503, 200] and guard.streams == 0 and guard.slots.busy == 0

    asyncio.run(scenario())
