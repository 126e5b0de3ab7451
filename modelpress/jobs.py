"""`Job`: a submitted job as the SDK hands it out, with what a user does to one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, TextIO

import httpx

from modelpress.errors import ApiError, JobFailed, NotFound, Overloaded
from modelpress.events import Event
from modelpress.progress import ProgressLine

if TYPE_CHECKING:
    from modelpress.client import Client

FINISHED = ("succeeded", "failed", "cancelled")
MODEL_KIND = "model.pt2"


class Job:
    """A job and its last known state (`data`, the API's JSON of it). `refresh()` reads it again; `wait()` follows
    it to the end. Attributes: id, status, progress, metrics, error, spec, model_id, dataset_id."""

    def __init__(self, client: "Client", data: dict):
        self.client, self.data = client, data

    def __repr__(self) -> str:
        return f"Job({self.id!r}, status={self.status!r})"

    id = property(lambda self: self.data["id"])
    status = property(lambda self: self.data["status"])
    progress = property(lambda self: self.data.get("progress") or {})
    metrics = property(lambda self: self.data.get("metrics") or {})
    error = property(lambda self: self.data.get("error"))
    spec = property(lambda self: self.data.get("spec") or {})
    model_id = property(lambda self: self.data.get("model_id"))
    dataset_id = property(lambda self: self.data.get("dataset_id"))

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def methods(self) -> list[str]:
        return [stage["method"] for stage in self.spec.get("stages", [])]

    def refresh(self) -> "Job":
        self.data = self.client.job(self.id)
        return self

    def cancel(self) -> "Job":
        """Cancel: a queued job at once, a running one at its method's next step (`wait()` for the end)."""
        self.data = self.client.cancel(self.id)
        return self

    def events(self) -> Iterator[Event]:
        """The job's server-sent events (status, progress, metrics, log, end) until it has finished."""
        return self.client.events(self.id)

    def wait(self, progress: bool | TextIO = False, timeout: float | None = None, raise_on_failure: bool = False,
             on_update: Callable[["Job"], None] | None = None, poll_s: float = 1.0) -> "Job":
        """Follow the job until it has finished and return it.

        `progress=True` shows a progress line on stderr (or pass a stream); `on_update(job)` is called on each
        change. The job's event stream is used, and polling every `poll_s` where the stream is not available.
        `timeout` (seconds) raises TimeoutError; `raise_on_failure` raises JobFailed for a failed or cancelled job.
        """
        line = ProgressLine(None if progress is True else progress) if progress else None
        deadline = None if timeout is None else time.monotonic() + timeout

        def check_deadline() -> None:
            if deadline is not None and time.monotonic() > deadline and not self.finished:
                raise TimeoutError(f"job {self.id} still {self.status} after {timeout} s")

        def update() -> None:
            if line:
                line.show(self.data)
            if on_update:
                on_update(self)
            check_deadline()

        try:
            if not self.finished:
                try:
                    self._follow_events(update, check_deadline)
                except (httpx.TransportError, Overloaded, NotFound):
                    self._poll(update, poll_s)  # a service without event streams, or a proxy that buffers them
            update()
        finally:
            if line:
                line.close()
        if raise_on_failure and self.status != "succeeded":
            raise JobFailed(self)
        return self

    def _follow_events(self, update: Callable[[], None], check_deadline: Callable[[], None]) -> None:
        for event in self.events():
            if event.kind == "keepalive":
                check_deadline()
                continue
            if event.kind == "end":
                self.data = event.data
                return
            if event.kind == "status":
                self.data = {**self.data, **event.data}
            elif event.kind in ("progress", "metrics"):
                self.data = {**self.data, event.kind: event.data}
            else:
                continue
            update()

    def _poll(self, update: Callable[[], None], poll_s: float) -> None:
        while not self.refresh().finished:
            update()
            time.sleep(poll_s)

    def artifacts(self) -> list[dict]:
        return self.client.artifacts(self.id)

    def download(self, directory: str | Path, everything: bool = False) -> list[Path]:
        """Download the final model (or, with `everything`, every artifact of every stage) into `directory`,
        each checked against the server's sha256; returns the files written."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        artifacts = self.artifacts()
        if not everything:
            artifacts = self._final_model(artifacts)
        if not artifacts:
            raise ApiError(404, "not_found", f"job {self.id} ({self.status}) has no artifacts to download")
        written = []
        for artifact in artifacts:
            name = artifact["name"] if not everything else f"{artifact['stage_index']}_{artifact['name']}"
            written.append(self.client.download(artifact, directory / Path(name).name))
        return written

    def _final_model(self, artifacts: list[dict]) -> list[dict]:
        """The last stage's main model: the one its metrics name, else its `.pt2`, else all its files."""
        last = [a for a in artifacts if a["stage_index"] == max((a["stage_index"] for a in artifacts), default=0)]
        named = (self.metrics.get("final") or {}).get("model_artifact")
        return ([a for a in last if a["name"] == named] or [a for a in last if a["kind"] == MODEL_KIND]
                or last)

    def logs(self) -> list[dict]:
        """Every line of the job's log so far."""
        lines, after = [], 0
        while True:
            page = self.client.logs(self.id, after=after, limit=1000)
            lines += page["items"]
            if not page["items"]:
                return lines
            after = page["next_after"]


__all__ = ["Job", "FINISHED"]
