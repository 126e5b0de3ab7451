"""A job's webhook through the real worker: a receiver that fails once gets the signed call again and the job
shows it delivered."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from core.jobs.webhooks import sign

pytestmark = [pytest.mark.e2e, pytest.mark.one_backend]
SECRET = "receiver-chosen-secret"


class Receiver:
    """An HTTP server on 127.0.0.1 that answers 503 to the first `failures` calls, then 200, and records calls."""

    def __init__(self, failures: int):
        self.calls: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(503 if len(receiver.calls) <= failures else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    running = Receiver(failures=1)
    yield running
    running.close()


def wait_for(condition, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_a_failed_call_is_retried_and_every_call_is_signed(service, fresh_tenant, receiver):
    spec = {"model_id": fresh_tenant["model"], "dataset_id": fresh_tenant["dataset"],
            "stages": [{"method": "ptq", "export_onnx": False}], "evaluation": {"latency": False},
            "webhook": {"url": receiver.url, "secret": SECRET}}
    with httpx.Client(base_url=service.base_url, timeout=30,
                      headers={"Authorization": f"Bearer {fresh_tenant['key']}"}) as http:
        job = http.post("/v1/jobs", json=spec).json()
        final = wait_for(lambda: (body := http.get(f"/v1/jobs/{job['id']}").json())["webhook"]["status"]
                         .startswith(("delivered", "failed")) and body, timeout_s=240)
    assert final["status"] == "succeeded"
    assert final["webhook"] == {"url": receiver.url, "status": "delivered (HTTP 200)", "attempts": 2}
    assert len(receiver.calls) == 2
    for headers, body in receiver.calls:
        timestamp = int(headers["x-modelpress-signature"].split(",")[0].removeprefix("t="))
        assert headers["x-modelpress-signature"] == sign(SECRET, timestamp, body)
    event = json.loads(receiver.calls[-1][1])
    assert event["event"] == "job.finished" and event["job"]["id"] == job["id"]
    assert event["job"]["status"] == "succeeded" and "accuracy" in event["job"]["final"]
