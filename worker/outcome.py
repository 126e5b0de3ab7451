"""A job's outcome: what the sandboxed run means for the user, written in one transaction.

The final status, the error or metrics, every artifact and the removal of the checkpoints commit together, and
only while this worker still owns the running job. If another worker has claimed it meanwhile (this one was
presumed dead), nothing is written: half an outcome, or two, is never visible.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

from compression.inspect import inspect_pt2
from core.config import Settings
from core.db.models import Artifact, Job
from core.db.session import session_scope
from core.jobs.artifacts import MODEL_ARTIFACT, delete_checkpoints
from core.jobs.state import mark_finished
from core.jobs.status import JobStatus
from core.store.blobs import write_blob
from worker.sandbox import ChildExit
from worker.scratch import open_output

log = logging.getLogger(__name__)

# The setting behind each limit of worker.isolation, named in the message when a job hits it.
LIMIT_SETTINGS = {"address_space": "MODELPRESS_SANDBOX_MEMORY_BYTES", "cpu_seconds": "MODELPRESS_SANDBOX_CPU_SECONDS",
                  "open_files": "MODELPRESS_SANDBOX_MAX_OPEN_FILES",
                  "file_bytes": "MODELPRESS_SANDBOX_MAX_FILE_BYTES"}
LIMIT_NAMES = {"address_space": "memory (address space)", "cpu_seconds": "CPU time",
               "open_files": "open files", "file_bytes": "file size"}
MAX_ARTIFACTS = 200


@dataclass
class Outcome:
    status: JobStatus
    code: str | None = None
    message: str | None = None
    metrics: dict | None = None
    artifacts: list[dict] = field(default_factory=list)  # validated "result" entries: files in the scratch dir

    @classmethod
    def failed(cls, code: str, message: str) -> "Outcome":
        return cls(JobStatus.FAILED, code, message)


class NotOwner(Exception):
    """The job is no longer this worker's running job."""


def finish(job_id: str, worker: str, outcome: Outcome, settings: Settings, scratch: Path | None = None) -> str:
    """Record `outcome`; returns the job's status, or "lost" when another worker owns the job now."""
    try:
        with session_scope() as session:
            if not mark_finished(session, job_id, worker, outcome.status, outcome.code, outcome.message,
                                 outcome.metrics):
                raise NotOwner(job_id)
            job = session.get(Job, job_id)
            for entry in outcome.artifacts:
                _store_artifact(session, job, entry, scratch, settings)
            delete_checkpoints(session, job_id)
    except NotOwner:
        log.warning("job %s is no longer owned by %s (claimed again elsewhere); its outcome '%s' is dropped",
                    job_id, worker, outcome.status)
        return "lost"
    log.info("job %s %s%s", job_id, outcome.status, f" ({outcome.code}: {outcome.message})" if outcome.code else "")
    return outcome.status


def _store_artifact(session, job: Job, entry: dict, scratch: Path, settings: Settings) -> None:
    with open_output(scratch, entry["file"]) as file:
        details = dict(entry["details"])
        if entry["kind"] == MODEL_ARTIFACT:
            # The signature lets a later job start from this model (parent_job_id) and be validated.
            details["signature"] = inspect_pt2(file).to_json()
            file.seek(0)
        blob = write_blob(session, job.tenant_id, file)
    session.add(Artifact(tenant_id=job.tenant_id, job_id=job.id, stage_index=entry["stage_index"],
                         name=entry["name"], kind=entry["kind"], blob_id=blob.id, size_bytes=blob.size_bytes,
                         sha256=blob.sha256, details=details))


def outcome_from_child(run: ChildExit, time_limit_s: int, stage_count: int) -> Outcome:
    """What the child's exit means. Its messages are untrusted: anything malformed is an internal error. A job
    that failed keeps the metrics its process measured before failing."""
    outcome = _outcome(run, time_limit_s, stage_count)
    measured = (run.error or {}).get("metrics")
    if outcome.status != JobStatus.SUCCEEDED and isinstance(measured, dict):
        outcome.metrics = measured
    return outcome


def _outcome(run: ChildExit, time_limit_s: int, stage_count: int) -> Outcome:
    if run.protocol_error:
        return Outcome.failed("internal_error", f"the job's process broke the protocol: {run.protocol_error}")
    if run.result is not None:
        try:
            return Outcome(JobStatus.SUCCEEDED, metrics=_dict(run.result.get("metrics")),
                           artifacts=_artifacts(run.result.get("artifacts"), stage_count))
        except ValueError as exc:
            return Outcome.failed("internal_error", f"the job's process reported a malformed result: {exc}")
    # Once asked to stop, how the child ended (stopped, killed after the grace period, failed meanwhile) is moot.
    reason = run.stop_reason or (run.error or {}).get("code")
    if reason == "time_limit_exceeded":
        return Outcome.failed("time_limit_exceeded", f"the job ran past its time limit of {time_limit_s} s")
    if reason == "cancelled":
        return Outcome(JobStatus.CANCELLED, "cancelled", "cancelled by the user while running")
    if run.error is not None:
        return _from_error(run.error, run.limits)
    return _from_exit_status(run)


def _from_error(error: dict, limits: dict) -> Outcome:
    code, message = str(error.get("code")), str(error.get("message"))
    if code == "out_of_memory":
        if limits.get("address_space") and not error.get("gpu"):
            return Outcome.failed("resource_limit", f"{message}{', or' if error.get('sizes') else ':'} raise the "
                                                    f"job's {_limit('address_space', limits)}")
        return Outcome.failed("invalid_input", message)
    if code == "resource_limit" and error.get("limit") in LIMIT_SETTINGS:
        return Outcome.failed("resource_limit", f"{message}; the job hit its {_limit(error['limit'], limits)}")
    if code in ("invalid_input", "internal_error"):
        return Outcome.failed(code, message)
    return Outcome.failed("internal_error", f"the job's process reported an unknown error {code!r}: {message}")


def _from_exit_status(run: ChildExit) -> Outcome:
    status, tail = run.returncode, run.output_tail.strip()[-1500:]
    if status is not None and status < 0:
        number = -status
        if number == signal.SIGXCPU:
            return Outcome.failed("resource_limit", f"the job used up its {_limit('cpu_seconds', run.limits)}")
        if number == signal.SIGKILL:
            return Outcome.failed("resource_limit", "the job's process was killed (SIGKILL), most likely by the "
                                  "kernel because the machine ran out of memory; lower the batch sizes or "
                                  f"samples of the spec, or set {LIMIT_SETTINGS['address_space']} below the "
                                  "machine's memory so such a job fails with a clear message")
        return Outcome.failed("internal_error", f"the job's process died of {signal.Signals(number).name}; its "
                                                f"last output:\n{tail}")
    return Outcome.failed("internal_error", f"the job's process exited with status {status} without a result; "
                                            f"its last output:\n{tail}")


def _limit(name: str, limits: dict) -> str:
    value = limits.get(name)
    shown = _bytes(value) if name in ("address_space", "file_bytes") and isinstance(value, int) else value
    return f"{LIMIT_NAMES[name]} limit of {shown} ({LIMIT_SETTINGS[name]}={value})"


def _bytes(value: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} bytes"


def _dict(value) -> dict:
    if not isinstance(value, dict):
        raise ValueError("metrics are not an object")
    return value


def _artifacts(entries, stage_count: int) -> list[dict]:
    if not isinstance(entries, list) or len(entries) > MAX_ARTIFACTS:
        raise ValueError(f"artifacts must be a list of at most {MAX_ARTIFACTS}")
    for entry in entries:
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("name"), str) and 0 < len(entry["name"]) <= 300
                and isinstance(entry.get("kind"), str) and 0 < len(entry["kind"]) <= 64
                and isinstance(entry.get("details"), dict)
                and type(entry.get("stage_index")) is int and 0 <= entry["stage_index"] < stage_count):
            raise ValueError(f"bad artifact entry {str(entry)[:200]}")
    return entries
