"""One job, start to finish: claim it, fetch its inputs, run it in a sandboxed process, record the outcome.

This process holds the database and broker credentials, so it never runs the compression work itself: the child
started by `worker.sandbox` does, and talks back over a pipe. Whatever happens after the claim (a spec that no
longer parses, a missing input, a crash of the child or of this code) ends with the job failed and its reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import time
import traceback
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from compression.context import ProgressEvent
from core.config import Settings
from core.db.models import Job
from core.db.session import session_scope
from core.jobs.baselines import baseline_key, find_baseline, save_baseline
from core.jobs.spec import JobCreate
from core.jobs.state import claim
from worker.compile_cache import build_headers_once, lend_headers, tenant_cache
from worker.joblog import JobLogWriter
from worker.messages import ProtocolError, checkpoint_file
from worker.outcome import Outcome, finish, outcome_from_child
from worker.reporting import Heartbeat, ProgressWriter, StopCheck
from worker.sandbox import isolation_plan, run_child, skipped_isolations
from worker.scratch import UnsafeOutput, give_to, job_scratch, open_output, sandbox_identity
from worker.storage import CheckpointStore, fetch_inputs, input_digests

log = logging.getLogger(__name__)
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
# What a job's process may send before a chatty (or hostile) one is no longer heard: log lines, checkpoint
# names (one per training stage is the norm; llm_ptq keeps one per decoder block, and the deepest open LLMs have
# up to 126), progress metrics per event.
MAX_RELAYED_LOG_LINES = 1000
MAX_CHECKPOINT_NAMES = 256
MAX_PROGRESS_METRICS = 50
LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


@lru_cache
def versions() -> dict:
    import platform

    import torch
    import torchao

    from compression import __version__
    return {"modelpress": __version__, "modelpress_source": library_source_digest(), "torch": torch.__version__,
            "torchao": torchao.__version__, "python": platform.python_version()}


def library_source_digest(root: Path | None = None) -> str:
    """A digest of the compression library's source files (those under `root`). The package version stays 0.1.0
    from one deployment to the next, so without this a stored baseline (`core.jobs.baselines`, keyed by these
    versions) measured by older code, say before a model kind got its own default metric, would be reused beside
    stages measured the new way. Read once per process: `versions()` is cached."""
    import compression

    root = root or Path(compression.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def resolve_device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_job(job_id: str, settings: Settings) -> str:
    """Returns the job's final status, "skipped" when another worker owns it or it is already finished, or
    "lost" when another worker claimed it while this one ran it."""
    if not claim(job_id, WORKER_NAME, settings, versions()):
        log.info("job %s not claimable (finished, cancelled or running elsewhere); skipping", job_id)
        return "skipped"
    joblog = JobLogWriter(job_id, settings)
    try:
        with Heartbeat(job_id, WORKER_NAME, settings.heartbeat_interval_s):
            status = _run(job_id, settings, joblog)
    except Exception as exc:  # the job must end failed with its reason, never stay "running"
        log.error("job %s failed in the worker:\n%s", job_id, traceback.format_exc())
        # The type only: the worker's own errors (database, broker, store) are not the tenant's to read.
        status = finish(job_id, WORKER_NAME, Outcome.failed(
            "internal_error", f"the worker failed while handling this job ({type(exc).__name__}); it is logged "
                              "there, and submitting the job again may work"), settings)
    if status == "lost":
        joblog.flush()  # the worker that owns the job now writes its end
    else:
        joblog.close()
    return status


def _run(job_id: str, settings: Settings, joblog: JobLogWriter) -> str:
    with session_scope() as session:
        job = session.get(Job, job_id)
    joblog.add("INFO", "worker", f"attempt {job.attempts} started" + (
        " (the worker of the previous attempt stopped answering; training resumes from its last checkpoint)"
        if job.attempts > 1 else ""))
    if job.attempts > settings.job_max_attempts:
        return finish(job_id, WORKER_NAME, Outcome.failed(
            "worker_lost", f"the worker running this job died {job.attempts - 1} times; giving up"), settings)
    try:
        spec = JobCreate.model_validate(job.spec)
    except ValidationError as exc:
        return finish(job_id, WORKER_NAME, Outcome.failed(
            "invalid_input", f"the job's stored spec is no longer valid ({exc}); submit the job again"), settings)
    device = resolve_device(settings.device)
    identity = sandbox_identity(settings)
    with job_scratch(settings, identity, job_id) as scratch:
        try:
            files = fetch_inputs(job, spec, scratch)
            joblog.use_scratch(settings, scratch)
            joblog.add("INFO", "worker", f"inputs fetched; running {len(spec.stages)} stage(s): "
                                         f"{', '.join(stage.method for stage in spec.stages)}")
            digests = input_digests(job)
        except ValueError as exc:
            return finish(job_id, WORKER_NAME, Outcome.failed("invalid_input", str(exc)), settings)
        evaluation = spec.evaluation.model_dump(mode="json")
        key = baseline_key(*digests, evaluation, versions())
        with session_scope() as session:
            known = find_baseline(session, job.tenant_id, key)
        give_to(scratch, identity)
        build_headers_once()
        lend_headers(scratch, identity)
        cache = tenant_cache(settings, identity, job.tenant_id)
        plan = isolation_plan(settings, identity, scratch, device, job.time_limit_s, cache)
        task = {**files, "stages": [stage.model_dump(mode="json") for stage in spec.stages],
                "evaluation": evaluation, "baseline": known, "upload_outputs": upload_outputs_file(cache, key),
                "train_split": spec.train_split,
                "seed": spec.seed, "device": device, "threads": settings.torch_threads,
                "time_limit_s": job.time_limit_s, "pace_evidence_s": settings.job_pace_evidence_s,
                "archive_limits": dataclasses.asdict(settings.archive_limits)}
        relay = Relay(job, scratch, settings, joblog, len(spec.stages))
        run = run_child(settings, scratch, {"isolation": plan, "task": task}, relay,
                        StopCheck(job_id, time.monotonic() + job.time_limit_s), cache)
        relay.log_isolation(run.isolation)
        if run.error and run.error.get("traceback"):
            joblog.add("ERROR", "job", f"the job failed on its input or spec:\n{run.error['traceback']}")
        outcome = outcome_from_child(run, job.time_limit_s, len(spec.stages))
        joblog.flush()  # before the final status, which tells a reader of the log that it is complete
        status = finish(job_id, WORKER_NAME, outcome, settings, scratch)
        if status == "succeeded" and known is None:
            _keep_baseline(job.tenant_id, key, digests, outcome.metrics["baseline"])
        return status


def upload_outputs_file(cache: Path, key: str) -> str:
    """Where the job keeps the upload's outputs on its evaluation split for the tenant's later jobs with the same
    baseline key (`compression.upload_outputs`): in the tenant's own cache directory, which only that tenant's
    jobs can read or write, so one tenant's outputs never reach another."""
    return str(cache / "upload-outputs" / f"{key}.npz")


def _keep_baseline(tenant_id: str, key: str, digests: tuple[str, str], metrics: dict) -> None:
    try:
        with session_scope() as session:
            save_baseline(session, tenant_id, key, *digests, metrics)
    except Exception:  # only a saving for later jobs: the job itself has succeeded and is recorded
        log.exception("could not keep the baseline of tenant %s (key %s)", tenant_id, key)


class Relay:
    """What the child reports while it runs: progress to the job row, checkpoints to the store, logs to ours."""

    def __init__(self, job: Job, scratch: Path, settings: Settings, joblog: JobLogWriter, stage_count: int):
        self.job_id, self.scratch, self.joblog = job.id, scratch, joblog
        self.progress = ProgressWriter(job.id, settings.progress_interval_s, stage_count, self._log_phase)
        self.checkpoints = CheckpointStore(job.id, settings)
        self.log_lines = 0
        self.checkpoint_names: set[str] = set()

    def __call__(self, message: dict) -> None:
        kind = message["type"]
        try:
            if kind == "progress":
                metrics = dict(list(dict(message.get("metrics") or {}).items())[:MAX_PROGRESS_METRICS])
                self.progress(ProgressEvent(str(message["stage"])[:100], str(message["phase"])[:100],
                                            int(message["step"]), int(message["total"]), metrics))
            elif kind == "checkpoint":
                name = str(message["name"])
                if len(name) > 200 or checkpoint_file(name) != Path(message["file"]).name:
                    raise ProtocolError(f"checkpoint {name[:200]!r} at {str(message['file'])[:200]!r}")
                if name not in self.checkpoint_names and len(self.checkpoint_names) >= MAX_CHECKPOINT_NAMES:
                    raise ProtocolError(f"more than {MAX_CHECKPOINT_NAMES} checkpoint names")
                with open_output(self.scratch, str(message["file"])) as file:
                    self.checkpoints.save(name, file)
                self.checkpoint_names.add(name)
            elif kind == "log" and self.log_lines < MAX_RELAYED_LOG_LINES:
                self.log_lines += 1
                level, text = int(message.get("level", logging.INFO)), str(message.get("message"))[:2000]
                log.log(level, "job %s: %s", self.job_id, text)
                self.joblog.add(logging.getLevelName(level) if level in LEVELS else "INFO", "job", text)
        except (KeyError, TypeError, ValueError, ProtocolError, UnsafeOutput) as exc:
            # A bad message costs the child that message only; a missing checkpoint merely resumes from an older one.
            log.warning("job %s: ignored a bad %s message from the job's process: %s", self.job_id, kind, exc)

    def _log_phase(self, event: ProgressEvent) -> None:
        where = "baseline" if event.stage == "main" else f"stage {event.stage}"
        self.joblog.add("INFO", "progress", f"{where}: {event.phase}" + (f" ({event.total} steps)"
                                                                         if event.total > 1 else ""))
        self.joblog.flush()  # a new phase is worth a write: it is what a user watching the log waits for

    def log_isolation(self, report: dict | None) -> None:
        skipped = skipped_isolations(report)
        log.log(logging.WARNING if skipped else logging.INFO, "job %s sandbox: %s%s", self.job_id, report,
                f"; not applied: {skipped}" if skipped else "")
