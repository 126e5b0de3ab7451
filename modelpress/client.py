"""A small Python client for the modelpress API (used by the demo and the end-to-end tests)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import httpx


class ApiError(RuntimeError):
    def __init__(self, response: httpx.Response):
        try:
            body = response.json()
            message = f"{body.get('error')}: {body.get('detail')}"
        except ValueError:
            message = response.text
        super().__init__(f"HTTP {response.status_code} {message}")
        self.status_code = response.status_code


class Client:
    def __init__(self, base_url: str, api_key: str, timeout: float = 300):
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"},
                                 timeout=timeout)

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise ApiError(response)
        return response

    def _upload(self, route: str, path: Path) -> dict:
        with open(path, "rb") as file:
            return self._check(self.http.post(route, files={"file": (Path(path).name, file)})).json()

    def upload_model(self, path: Path) -> dict:
        return self._upload("/v1/models", path)

    def upload_resumable(self, path: Path, kind: str, part_bytes: int | None = None, upload_id: str | None = None
                         ) -> dict:
        """Upload a large model or dataset in parts (POST /v1/uploads); returns the model or dataset. Pass the
        `upload_id` of an interrupted call to send only the parts that did not arrive."""
        path = Path(path)
        if upload_id is None:
            with open(path, "rb") as file:
                sha256 = hashlib.file_digest(file, "sha256").hexdigest()
            body = {"kind": kind, "name": path.name, "size_bytes": path.stat().st_size, "sha256": sha256}
            if part_bytes:
                body["part_bytes"] = part_bytes
            upload_id = self._check(self.http.post("/v1/uploads", json=body)).json()["id"]
        upload = self._check(self.http.get(f"/v1/uploads/{upload_id}")).json()
        received = set(upload["parts_received"])
        with open(path, "rb") as file:
            for number in range(upload["parts_total"]):
                if number in received:
                    continue
                file.seek(number * upload["part_bytes"])
                part = file.read(upload["part_bytes"])
                self._check(self.http.put(f"/v1/uploads/{upload_id}/parts/{number}", content=part, headers={
                    "X-Checksum-SHA256": hashlib.sha256(part).hexdigest()}))
        return self._check(self.http.post(f"/v1/uploads/{upload_id}/complete")).json()["result"]

    def upload_dataset(self, path: Path) -> dict:
        return self._upload("/v1/datasets", path)

    def submit_job(self, spec: dict) -> dict:
        return self._check(self.http.post("/v1/jobs", json=spec)).json()

    def job(self, job_id: str) -> dict:
        return self._check(self.http.get(f"/v1/jobs/{job_id}")).json()

    def cancel(self, job_id: str) -> dict:
        return self._check(self.http.post(f"/v1/jobs/{job_id}/cancel")).json()

    def artifacts(self, job_id: str) -> list[dict]:
        return self._check(self.http.get(f"/v1/jobs/{job_id}/artifacts")).json()

    def wait(self, job_id: str, timeout: float = 3600, poll: float = 0.5,
             on_progress: Callable[[dict], None] | None = None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress:
                on_progress(job)
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(poll)

    def download(self, artifact: dict, path: Path) -> Path:
        """Stream an artifact to `path` and check it against the server's sha256. An object store's presigned URL
        (a 307 from the API) is followed; httpx drops the Authorization header on the way to another host."""
        digest = hashlib.sha256()
        with self.http.stream("GET", f"/v1/artifacts/{artifact['id']}", follow_redirects=True) as response:
            self._check(response)
            expected = artifact["sha256"]
            with open(path, "wb") as target:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    target.write(chunk)
        if digest.hexdigest() != expected:
            raise RuntimeError(f"download of {artifact['name']} is corrupt: sha256 {digest.hexdigest()} != "
                               f"{expected}")
        return path
