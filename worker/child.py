"""Entry of a job's sandboxed process: `python -I -m worker.child <fd>`, started by `worker.sandbox`.

It reads its setup from stdin, isolates itself (`worker.isolation`) before touching the upload, then runs the
pipeline on the files the worker put in its scratch directory and reports over the pipe `<fd>`
(`worker.messages`). It imports only the standard library and `compression`: never app/, the database, the
broker or Celery, and its environment holds no credentials, so a model that managed to run code would find
nothing to use.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

from worker import isolation
from worker.messages import checkpoint_file, decode, encode

# Modules whose presence in the child would mean it runs the service's code for the database or the broker.
# (Not redis: torch's Inductor imports that client library, when installed, for an optional remote cache.)
FORBIDDEN_MODULES = ("app", "sqlalchemy", "alembic", "celery", "kombu", "psycopg")
LOG_MESSAGE_CHARS = 2000


class Channel:
    """Messages to the worker; any thread may send (the logging handler does)."""

    def __init__(self, fd: int):
        self._file = os.fdopen(fd, "wb")
        self._lock = threading.Lock()

    def send(self, kind: str, **fields) -> None:
        line = encode(kind, **fields)
        with self._lock:
            self._file.write(line)
            self._file.flush()


class StopRequests:
    """Reads the worker's stop requests from stdin in the background; `reason()` is the RunContext's should_stop.
    End of input means the worker is gone, and a job nobody will store is not worth finishing."""

    def __init__(self, stream):
        self._reason: str | None = None
        threading.Thread(target=self._read, args=(stream,), name="stop-requests", daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            message = decode(line)
            if message["type"] == "stop":
                self._reason = str(message.get("reason") or "cancelled")
        os._exit(3)

    def reason(self) -> str | None:
        return self._reason


class LogForwarder(logging.Handler):
    def __init__(self, channel: Channel):
        super().__init__(logging.WARNING)
        self.channel = channel

    def emit(self, record: logging.LogRecord) -> None:
        self.channel.send("log", level=record.levelno, logger=record.name,
                          message=self.format(record)[:LOG_MESSAGE_CHARS])


class JobRun:
    """One pipeline run: the RunContext callbacks become messages and files in the scratch directory."""

    def __init__(self, task: dict, scratch: Path, channel: Channel, stop: StopRequests):
        self.task, self.scratch, self.channel, self.stop = task, scratch, channel, stop
        self.checkpoints = scratch / task["checkpoints"]
        self.where = {"stage": "main", "phase": "start"}
        self.measured: dict | None = None  # the metrics measured so far, kept by a failed job
        self.started = time.monotonic()

    def report(self, event) -> None:
        self.where = {"stage": event.stage, "phase": event.phase}
        self.channel.send("progress", stage=event.stage, phase=event.phase, step=event.step, total=event.total,
                          metrics=event.metrics)

    def save_checkpoint(self, name: str, data: bytes) -> None:
        path = self.checkpoints / checkpoint_file(name)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        os.replace(partial, path)  # the worker may be reading the previous one: it sees a whole file either way
        self.channel.send("checkpoint", name=name, file=str(path.relative_to(self.scratch)))

    def load_checkpoint(self, name: str) -> bytes | None:
        path = self.checkpoints / checkpoint_file(name)
        return path.read_bytes() if path.is_file() else None

    def keep_measured(self, metrics: dict) -> None:
        self.measured = metrics

    def file_limit_hit(self) -> bool:
        """Whether a file in the scratch directory has reached the file-size limit (RLIMIT_FSIZE)."""
        import resource
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        return limit != resource.RLIM_INFINITY and any(
            path.is_file() and path.stat().st_size >= limit for path in self.scratch.rglob("*"))

    def run(self) -> None:
        import torch
        from pydantic import TypeAdapter

        from compression.archive import ArchiveLimits
        from compression.context import PACE_EVIDENCE_S, RunContext
        from compression.pipeline import run_pipeline
        from compression.specs import EvaluationSpec, StageSpec

        task = self.task
        if task.get("threads"):
            torch.set_num_threads(task["threads"])
        stages = TypeAdapter(list[StageSpec]).validate_python(task["stages"])
        evaluation = EvaluationSpec.model_validate(task["evaluation"])
        # The worker's clock for the time limit started just before this process did: a phase that cannot end
        # before then fails at once with its estimate (compression.context.WillNotFinish).
        deadline = self.started + task["time_limit_s"] if task.get("time_limit_s") else None
        ctx = RunContext(report=self.report, should_stop=self.stop.reason, save_checkpoint=self.save_checkpoint,
                         load_checkpoint=self.load_checkpoint, device=task["device"], seed=task["seed"],
                         deadline=deadline, pace_evidence_s=task.get("pace_evidence_s", PACE_EVIDENCE_S))
        limits = ArchiveLimits(**task["archive_limits"])
        # A folder job gets what any job gets: the uploaded students, metrics kept as measured (a failed job keeps
        # them), the stored baseline and upload outputs.
        options = dict(uploaded_models={k: self.scratch / v for k, v in task["uploaded_models"].items()},
                       on_measured=self.keep_measured, known_baseline=task.get("baseline"),
                       upload_outputs_file=task.get("upload_outputs"))
        if task.get("model_kind") == "hf_folder":
            from compression.llm.pipeline import run_folder_pipeline
            result = run_folder_pipeline(self.scratch / task["model"], self.scratch / task["dataset"],
                                         task["model_task"], stages, evaluation, ctx, self.scratch / task["workdir"],
                                         task["train_split"], limits, **options)
        else:
            result = run_pipeline(self.scratch / task["model"], self.scratch / task["dataset"], stages, evaluation,
                                  ctx, self.scratch / task["workdir"], train_split=task["train_split"], limits=limits,
                                  **options)
        artifacts = [{"stage_index": index, "name": a.name, "kind": a.kind, "details": a.metadata,
                      "file": str(Path(a.path).resolve().relative_to(self.scratch))}
                     for index, stage in enumerate(result.stages) for a in stage.artifacts]
        self.channel.send("result", metrics=result.to_metrics(), artifacts=artifacts)


def probe(request: dict) -> dict:
    """What the sandbox looks like from inside: identity, environment, reachable ports and paths, limits, and
    whether the modules a job imports (`request["imports"]`) load there and pull in anything forbidden, and
    torch.compile works (`request["compile"]`)."""
    import importlib
    import resource

    for name in request.get("imports", []):
        importlib.import_module(name)
    if request.get("compile"):
        from worker.compile_cache import warm_up
        warm_up()
    time.sleep(request.get("hold_s", 0))  # stays busy, deaf to stop requests: how the worker's grace kill is tested

    def attempt(action) -> str:
        try:
            action()
            return "ok"
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror or exc}"

    status = dict(line.split(":\t", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":\t" in line)
    return {"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "parent": os.getppid(),
            "environ": dict(os.environ),
            "no_new_privs": status.get("NoNewPrivs", "").strip() == "1",
            "ports": {str(port): attempt(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close())
                      for port in request.get("ports", [])},
            "paths": {path: attempt(lambda: open(path, "rb").close()) for path in request.get("paths", [])},
            "limits": {name: resource.getrlimit(limit) for name, limit in isolation.LIMITS.items()},
            "forbidden_modules": sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN_MODULES)}


def main(channel_fd: int | None = None) -> int:
    """Run the job (or probe) the worker sends on stdin, reporting over `channel_fd` (default: argv[1]); also
    entered in a process forked by `worker.zygote`, which has put the same fds and environment in place."""
    channel = Channel(int(sys.argv[1]) if channel_fd is None else channel_fd)
    setup = decode(sys.stdin.buffer.readline())
    report = isolation.apply(setup["isolation"])
    channel.send("ready", isolation=report)
    if "probe" in setup:
        channel.send("probe", **probe(setup["probe"]))
        return 0
    logging.getLogger().addHandler(LogForwarder(channel))
    from worker.child_errors import describe  # imports compression: only once isolated
    run = None
    try:
        run = JobRun(setup["task"], Path(setup["isolation"]["scratch"]), channel, StopRequests(sys.stdin.buffer))
        run.run()
    except BaseException as exc:  # whatever ended the job, the worker hears why
        channel.send("error", metrics=run.measured if run else None,
                     **describe(exc, run.where if run else {"stage": "main", "phase": "start"},
                                setup["task"]["stages"], setup["task"]["evaluation"],
                                file_limit_hit=run is not None and run.file_limit_hit()))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
