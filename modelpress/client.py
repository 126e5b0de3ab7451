"""The modelpress Python SDK: upload, submit, follow, download. Needs only httpx and pydantic (no torch).

    from modelpress import Client, PTQ

    client = Client()                      # MODELPRESS_URL / MODELPRESS_API_KEY, or ~/.config/modelpress/config.toml
    model = client.upload_model("model.pt2")
    data = client.upload_dataset("data.npz")
    job = client.submit(model, data, stages=[PTQ(calibration_samples=512)])
    job.wait(progress=True)
    print(job.metrics["final"])
    job.download("out/")

Errors the API answers are raised as `modelpress.errors.ApiError` subclasses (InvalidInput, NotFound, ...)
carrying the server's `error` code and `detail`. The JSON methods at the end (`submit_job`, `job`, `wait`,
`artifacts`, `download`, `logs`) take and return the API's JSON as dicts, for scripts that want the wire format.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator, Sequence

import httpx

from compression.specs import EvaluationSpec
from core.jobs.spec import JobCreate
from modelpress import connection
from modelpress.compare import Comparison, compare
from modelpress.errors import ChecksumMismatch, error_from_response
from modelpress.events import Event, follow
from modelpress.folders import left_out, upload_file
from modelpress.jobs import FINISHED, Job

PAGE = 200


@dataclass(frozen=True)
class Upload:
    """An uploaded model or dataset as the API describes it (`info` holds the whole JSON, e.g. the model's
    signature or the dataset's splits)."""

    id: str
    name: str
    size_bytes: int
    sha256: str
    created_at: datetime
    info: dict
    # a directory's files not sent: the other copies of its weights and scripts of a Hub snapshot (`folders`)
    left_out: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: dict) -> "Upload":
        return cls(data["id"], data["name"], data["size_bytes"], data["sha256"],
                   datetime.fromisoformat(data["created_at"].replace("Z", "+00:00")), data)


class Client:
    """`Client(url=None, api_key=None)`: arguments, else MODELPRESS_URL / MODELPRESS_API_KEY, else the config
    file (see modelpress.connection)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 300,
                 http: httpx.Client | None = None):
        """`http`: an httpx.Client to send through instead (with your proxies, say), used as it is: its base URL
        and headers must already name the service and carry the key."""
        self.url, api_key = connection.resolve(url, api_key)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = http or httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            response.read()
            raise error_from_response(response)
        return response

    # Uploads

    def _upload(self, route: str, path: str | Path, idempotency_key: str | None, **params) -> Upload:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        with upload_file(path) as sent, open(sent, "rb") as file:
            response = self.http.post(route, files={"file": (sent.name, file)}, headers=headers,
                                      params={k: v for k, v in params.items() if v is not None})
        return _with_left_out(Upload.from_json(self.check(response).json()), path)

    def upload_model(self, path: str | Path, idempotency_key: str | None = None, task: str | None = None) -> Upload:
        """Upload a `.pt2` (torch.export.save, dynamic batch dimension), or a Hugging Face folder (the directory
        save_pretrained wrote, zipped here, or a .zip/.tar/.tar.gz of it) with its `task` (default: inferred from
        config.json); checked at once (InvalidInput says why)."""
        return self._upload("/v1/models", path, idempotency_key, task=task)

    def upload_dataset(self, path: str | Path, idempotency_key: str | None = None) -> Upload:
        """Upload an `.npz` whose arrays are named `<split>.<input>` (`train.x`, `train.y`, `val.x`, ...)."""
        return self._upload("/v1/datasets", path, idempotency_key)

    def upload_resumable(self, path: str | Path, kind: str, part_bytes: int | None = None,
                         upload_id: str | None = None, task: str | None = None) -> Upload:
        """Upload a large model or dataset (`kind`) in parts (POST /v1/uploads). Pass the `upload_id` of an
        interrupted call to send only the parts that did not arrive; `task` as for `upload_model`. A directory
        (a Hugging Face folder) is zipped first, the same way each time, so a resumed call sends the same bytes."""
        with upload_file(path) as sent:
            return _with_left_out(self._upload_parts(sent, kind, part_bytes, upload_id, task), path)

    def _upload_parts(self, path: Path, kind: str, part_bytes: int | None, upload_id: str | None,
                      task: str | None) -> Upload:
        if upload_id is None:
            with open(path, "rb") as file:
                sha256 = hashlib.file_digest(file, "sha256").hexdigest()
            body = {"kind": kind, "name": path.name, "size_bytes": path.stat().st_size, "sha256": sha256}
            if part_bytes:
                body["part_bytes"] = part_bytes
            upload_id = self.check(self.http.post("/v1/uploads", json=body)).json()["id"]
        upload = self.check(self.http.get(f"/v1/uploads/{upload_id}")).json()
        received = set(upload["parts_received"])
        with open(path, "rb") as file:
            for number in range(upload["parts_total"]):
                if number in received:
                    continue
                file.seek(number * upload["part_bytes"])
                part = file.read(upload["part_bytes"])
                self.check(self.http.put(f"/v1/uploads/{upload_id}/parts/{number}", content=part, headers={
                    "X-Checksum-SHA256": hashlib.sha256(part).hexdigest()}))
        completed = self.http.post(f"/v1/uploads/{upload_id}/complete", params={"task": task} if task else None)
        return Upload.from_json(self.check(completed).json()["result"])

    # Jobs

    def submit(self, model: Upload | Job | str, dataset: Upload | str, stages: Sequence,
               evaluation: EvaluationSpec | dict | None = None, idempotency_key: str | None = None,
               **options) -> Job:
        """Submit a job: `stages` are spec objects (`PTQ(...)`, `QAT(...)`, ... from `modelpress`) or dicts,
        applied in order. `model` is an upload (or its id) or an earlier succeeded Job to start from.
        `options`: train_split, time_limit_s, seed. The spec is checked here with the models the API uses, so a
        mistake raises pydantic's ValidationError before anything is sent."""
        start = {"parent_job_id": model.id} if isinstance(model, Job) else {"model_id": _id(model)}
        spec = JobCreate.model_validate({**start, "dataset_id": _id(dataset), "stages": list(stages),
                                         **({"evaluation": evaluation} if evaluation is not None else {}),
                                         **options})
        return Job(self, self.submit_job(spec.model_dump(mode="json"), idempotency_key=idempotency_key))

    def get_job(self, job_id: str) -> Job:
        return Job(self, self.job(job_id))

    def jobs(self, status: str | None = None, limit: int | None = None) -> list[Job]:
        """Jobs of this key's tenant, newest first (all of them, or the first `limit`), optionally with one
        status (queued, running, succeeded, failed, cancelled)."""
        found: list[Job] = []
        while limit is None or len(found) < limit:
            params = {"limit": min(PAGE, limit - len(found)) if limit else PAGE, "offset": len(found)}
            page = self.check(self.http.get("/v1/jobs", params={**params, **({"status": status} if status
                                                                             else {})})).json()
            found += [Job(self, item) for item in page["items"]]
            if not page["items"] or len(found) >= page["total"]:
                break
        return found

    def compare(self, jobs: Sequence[Job | str]) -> Comparison:
        """Jobs side by side: metric, size, latency and speed-up against their uploaded model."""
        return compare([job if isinstance(job, Job) else self.get_job(job) for job in jobs])

    # The API's JSON, as dicts

    def submit_job(self, spec: dict, idempotency_key: str | None = None) -> dict:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.check(self.http.post("/v1/jobs", json=spec, headers=headers)).json()

    def job(self, job_id: str) -> dict:
        return self.check(self.http.get(f"/v1/jobs/{job_id}")).json()

    def cancel(self, job_id: str) -> dict:
        return self.check(self.http.post(f"/v1/jobs/{job_id}/cancel")).json()

    def artifacts(self, job_id: str) -> list[dict]:
        return self.check(self.http.get(f"/v1/jobs/{job_id}/artifacts")).json()

    def logs(self, job_id: str, after: int = 0, limit: int = 200) -> dict:
        return self.check(self.http.get(f"/v1/jobs/{job_id}/logs", params={"after": after, "limit": limit})).json()

    def events(self, job_id: str) -> Iterator[Event]:
        return follow(self.http, job_id, self.check)

    def wait(self, job_id: str, timeout: float = 3600, poll: float = 0.5,
             on_progress: Callable[[dict], None] | None = None) -> dict:
        """Poll the job until it has finished; `on_progress(job)` sees each state read."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if on_progress:
                on_progress(job)
            if job["status"] in FINISHED:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")
            time.sleep(poll)

    def download(self, artifact: dict, path: str | Path) -> Path:
        """Stream an artifact to `path` and check it against the server's sha256 (ChecksumMismatch otherwise;
        nothing is left at `path` then). An object store's presigned URL (a 307 from the API) is followed; httpx
        drops the Authorization header on the way to another host."""
        path, digest = Path(path), hashlib.sha256()
        partial = path.with_name(path.name + ".partial")
        with self.http.stream("GET", f"/v1/artifacts/{artifact['id']}", follow_redirects=True) as response:
            self.check(response)
            expected = artifact["sha256"]
            with open(partial, "wb") as target:
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    target.write(chunk)
        if digest.hexdigest() != expected:
            partial.unlink()
            raise ChecksumMismatch(f"download of {artifact['name']} is corrupt: sha256 {digest.hexdigest()} != "
                                   f"{expected}")
        partial.replace(path)
        return path


def _with_left_out(upload: Upload, path: str | Path) -> Upload:
    return replace(upload, left_out=tuple(left_out(Path(path)))) if Path(path).is_dir() else upload


def _id(value: Upload | str) -> str:
    return value if isinstance(value, str) else value.id
