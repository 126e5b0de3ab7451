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

    def _upload(self, route: str, path: Path, **params) -> dict:
        with open(path, "rb") as file:
            return self._check(self.http.post(route, files={"file": (Path(path).name, file)},
                                              params={k: v for k, v in params.items() if v is not None})).json()

    def upload_model(self, path: Path, task: str | None = None) -> dict:
        """A .pt2, or a Hugging Face folder as .zip/.tar with its `task` (default: inferred from config.json)."""
        return self._upload("/v1/models", path, task=task)

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
        """Stream an artifact to `path` and check it against the server's sha256."""
        digest = hashlib.sha256()
        with self.http.stream("GET", f"/v1/artifacts/{artifact['id']}") as response:
            self._check(response)
            expected = response.headers["X-Checksum-SHA256"]
            with open(path, "wb") as target:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    target.write(chunk)
        if digest.hexdigest() != expected:
            raise RuntimeError(f"download of {artifact['name']} is corrupt: sha256 {digest.hexdigest()} != "
                               f"{expected}")
        return path
