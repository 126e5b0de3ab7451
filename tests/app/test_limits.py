"""Request size limits and per-tenant quotas: refused with 413/429 in the error shape, early, without hanging."""

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import threading

import httpx
import numpy as np
import pytest

from modelpress.demo import _free_port, wait_ready
from tests.app.conftest import new_key

SERVER_LIMITS = {"MODELPRESS_MAX_DATASET_BYTES": "200000", "MODELPRESS_MAX_JSON_BODY_BYTES": "10000",
                 "MODELPRESS_QUOTA_STORED_BYTES": "500000"}


def _npz(rows: int) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{"train.x": np.zeros((rows, 10), np.float32)})
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(backend, tmp_path_factory):
    """A real API process (uvicorn) with small limits, on the test database."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("limits") / "api.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "modelpress.cli", "api", "--port", str(port)],
                               env={**os.environ, **SERVER_LIMITS}, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", timeout=60, processes=[process])
        yield port
    finally:
        process.terminate()
        process.wait(20)
        log.close()


def exchange(port: int, head: str, chunks=()) -> tuple[int, dict, dict, bool]:
    """Send raw HTTP (so Content-Length can lie and a body can stop early); returns (status, headers, JSON body,
    whether the server closed the connection). A server waiting for more body would time out here instead."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:  # the server answered and closed while we were still sending
            pass
        data, closed = b"", False
        try:
            while not closed:
                received = sock.recv(65536)
                data += received
                closed = not received
        except ConnectionResetError:  # closed with our unread bytes in its buffer: still closed
            closed = True
    header_block, _, body = data.partition(b"\r\n\r\n")
    lines = header_block.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body), closed


FILE_PART = b'--b\r\nContent-Disposition: form-data; name="file"; filename="d.npz"\r\n\r\n'


def _chunked(total: int, start: bytes = b"", size: int = 8192):
    """A chunked body: `start`, then `total` bytes of filler, in chunks of `size`."""
    yield b"%x\r\n" % len(start) + start + b"\r\n" if start else b""
    for _ in range(total // size):
        yield b"%x\r\n" % size + b"x" * size + b"\r\n"


def test_a_declared_length_over_the_limit_is_refused_before_reading(server):
    status, headers, body, closed = exchange(server, "POST /v1/datasets HTTP/1.1\nHost: t\nContent-Length: "
                                                     "10000000000\nContent-Type: multipart/form-data; boundary=b\n")
    assert (status, body["error"], closed) == (413, "payload_too_large", True)
    assert "10000000000 bytes" in body["detail"] and headers["connection"] == "close"


def test_a_chunked_body_is_cut_at_the_limit(server):
    key = new_key()
    status, _, body, closed = exchange(server, f"POST /v1/datasets HTTP/1.1\nHost: t\nAuthorization: Bearer {key}\n"
                                               "Transfer-Encoding: chunked\n"
                                               "Content-Type: multipart/form-data; boundary=b\n",
                                       _chunked(400_000, FILE_PART))
    assert (status, body["error"], closed) == (413, "payload_too_large", True)
    assert "cut off" in body["detail"]
    status, _, body, closed = exchange(server, "POST /v1/jobs HTTP/1.1\nHost: t\nContent-Type: application/json\n"
                                               f"Authorization: Bearer {key}\nTransfer-Encoding: chunked\n",
                                       _chunked(10_000_000))
    assert (status, body["error"], closed) == (413, "payload_too_large", True)


def test_an_upload_refused_before_its_body_is_read_closes_the_connection(server):
    head = ("POST /v1/datasets HTTP/1.1\nHost: t\nContent-Length: 150000\n"
            "Content-Type: multipart/form-data; boundary=b\n")
    status, headers, body, closed = exchange(server, head)  # no key, and the body is never sent
    assert (status, body["error"], headers["connection"], closed) == (401, "unauthorized", "close", True)


def test_the_storage_quota_is_checked_on_the_declared_size_before_reading(server):
    key = new_key()
    url = f"http://127.0.0.1:{server}/v1/datasets"
    for _ in range(3):  # 3 x 120 KB fit in the 500,000-byte quota
        created = httpx.post(url, headers={"Authorization": f"Bearer {key}"},
                             files={"file": ("d.npz", _npz(3000))})
        assert created.status_code == 201, created.text
    # Under the 200,000-byte size limit (plus multipart framing), over what is left of the quota; never sent.
    head = (f"POST /v1/datasets HTTP/1.1\nHost: t\nAuthorization: Bearer {key}\nContent-Length: 250000\n"
            "Content-Type: multipart/form-data; boundary=b\n")
    status, headers, body, closed = exchange(server, head)
    assert (status, body["error"], closed) == (429, "quota_exceeded", True)
    assert "of your 500,000-byte quota" in body["detail"] and "retry-after" not in headers


def test_the_body_limit_passes_on_no_byte_past_the_limit():
    """Whatever reads the body behind the middleware (the multipart spool) sees at most `limit` bytes, and the
    client gets the 413 instead of the app's own answer."""
    from app.core.middleware import BodyLimitMiddleware
    seen, sent = [], []

    async def reader_app(scope, receive, send):
        while True:
            message = await receive()
            seen.append(len(message.get("body", b"")))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"stored"})

    messages = iter([{"type": "http.request", "body": b"x" * 30_000, "more_body": True}] * 1000)

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    middleware = BodyLimitMiddleware(reader_app, lambda method, path: (100_000, "a test upload"))
    scope = {"type": "http", "method": "POST", "path": "/v1/datasets",
             "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(middleware(scope, receive, send))
    assert sum(seen) <= 100_000 and len(seen) == 3
    assert sent[0]["status"] == 413 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["error"] == "payload_too_large"


def test_a_10_mb_job_spec_is_refused_and_not_stored(api, auth, uploaded):
    spec = {"model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
            "stages": [{"method": "ptq", "include": ["x" * 100] * 100_000}]}
    response = api.post("/v1/jobs", headers=auth, json=spec)
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error"] == "payload_too_large" and "x" * 100 not in response.text
    assert api.get("/v1/jobs", headers=auth).json()["total"] == 0


def test_storage_quota(api, auth, monkeypatch):
    from core.config import get_settings
    data = _npz(1000)
    monkeypatch.setattr(get_settings(), "quota_stored_bytes", int(len(data) * 1.5))
    first = api.post("/v1/datasets", headers=auth, files={"file": ("a.npz", data)})
    assert first.status_code == 201, first.text
    refused = api.post("/v1/datasets", headers=auth, files={"file": ("b.npz", data)})
    assert refused.status_code == 429 and refused.json()["error"] == "quota_exceeded"
    assert f"you store {len(data):,} bytes" in refused.json()["detail"] and "Retry-After" not in refused.headers
    assert "DELETE /v1/models/{id}" in refused.json()["detail"]
    other_tenant = {"Authorization": f"Bearer {new_key()}"}
    assert api.post("/v1/datasets", headers=other_tenant, files={"file": ("b.npz", data)}).status_code == 201
    assert api.delete(f"/v1/datasets/{first.json()['id']}", headers=auth).status_code == 204
    assert api.post("/v1/datasets", headers=auth, files={"file": ("b.npz", data)}).status_code == 201


def test_active_job_quota(api, auth, uploaded, monkeypatch):
    from core.config import get_settings
    monkeypatch.setattr(get_settings(), "quota_active_jobs", 1)
    spec = {"model_id": uploaded["model"]["id"], "dataset_id": uploaded["dataset"]["id"],
            "stages": [{"method": "ptq"}]}
    first = api.post("/v1/jobs", headers=auth, json=spec)
    assert first.status_code == 201
    refused = api.post("/v1/jobs", headers=auth, json=spec)
    assert refused.status_code == 429 and refused.json()["error"] == "quota_exceeded"
    assert "1 queued or running jobs and the limit is 1" in refused.json()["detail"]
    assert refused.headers["Retry-After"] == str(get_settings().quota_retry_after_s)
    api.post(f"/v1/jobs/{first.json()['id']}/cancel", headers=auth)
    assert api.post("/v1/jobs", headers=auth, json=spec).status_code == 201


def test_uploads_must_be_multipart_with_a_file_field(api, auth):
    raw = api.post("/v1/models", headers={**auth, "Content-Type": "application/octet-stream"}, content=b"PK")
    assert raw.status_code == 415 and "multipart/form-data" in raw.json()["detail"]
    wrong_field = api.post("/v1/models", headers=auth, files={"model": ("m.pt2", b"PK")})
    assert wrong_field.status_code == 422 and "field 'file'" in wrong_field.json()["detail"]


def test_long_file_names_are_shortened_and_nul_bytes_refused(api, auth):
    long_name = "d" * 400 + ".npz"
    created = api.post("/v1/datasets", headers=auth, files={"file": (long_name, _npz(2))})
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "d" * 196 + ".npz"
    body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="a\x00b.npz"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + _npz(2) + b"\r\n--b--\r\n")
    refused = api.post("/v1/datasets", headers={**auth, "Content-Type": "multipart/form-data; boundary=b"},
                       content=body)
    assert refused.status_code == 422 and "control characters" in refused.json()["detail"]


def test_concurrent_uploads_cannot_both_take_the_last_of_the_quota(api, auth, monkeypatch):
    from core.config import get_settings
    data = _npz(1000)
    monkeypatch.setattr(get_settings(), "quota_stored_bytes", int(len(data) * 1.5))
    barrier, statuses = threading.Barrier(3), []

    def upload():
        barrier.wait()
        statuses.append(api.post("/v1/datasets", headers=auth, files={"file": ("d.npz", data)}).status_code)

    threads = [threading.Thread(target=upload) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [201, 429, 429]
    assert api.get("/v1/datasets", headers=auth).json()["total"] == 1


def test_upload_limits_apply_behind_a_path_prefix(backend):
    """Behind a proxy that mounts the API under a prefix (root_path), an upload still gets the upload limit, not
    the 1 MiB JSON one."""
    from app.core.middleware import BodyLimitMiddleware
    from app.core.uploads import request_body_limit
    limits = []

    def recorded_limit(method: str, path: str) -> tuple[int, str]:
        limits.append(request_body_limit(method, path))
        return limits[-1]

    middleware = BodyLimitMiddleware(None, recorded_limit)
    scope = {"type": "http", "method": "POST", "path": "/api/v1/models", "root_path": "/api",
             "headers": [(b"content-length", b"9" * 18)]}

    async def send(message):
        pass

    asyncio.run(middleware(scope, None, send))
    assert "a model upload" in limits[0][1]
