"""One job, start to finish: claim, fetch inputs, run the pipeline, store results, record the outcome."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import time
import traceback
from pathlib import Path

from sqlalchemy import update

from app.config import Settings
from app.db.models import Job, utcnow
from app.db.session import session_scope
from app.jobs.schemas import JobCreate
from compression.context import Cancelled, RunContext
from worker.claims import claim
from worker.reporting import Heartbeat, ProgressWriter, StopCheck
from worker.storage import CheckpointStore, fetch_inputs, model_resolver, store_stage_artifacts

log = logging.getLogger(__name__)
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"


def versions() -> dict:
    import platform

    import torch
    import torchao

    from compression import __version__
    return {"modelpress": __version__, "torch": torch.__version__, "torchao": torchao.__version__,
            "python": platform.python_version()}


def resolve_device(setting: str, threads: int | None) -> str:
    import torch
    if threads:
        torch.set_num_threads(threads)
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def run_job(job_id: str, settings: Settings) -> str:
    """Returns the job's final status, or "skipped" when another worker owns it or it is already finished."""
    if not claim(job_id, WORKER_NAME, settings, versions()):
        log.info("job %s not claimable (finished, cancelled or running elsewhere); skipping", job_id)
        return "skipped"
    with session_scope() as session:
        job = session.get(Job, job_id)
    if job.attempts > settings.job_max_attempts:
        return _finish(job_id, "failed", "worker_lost", f"the worker running this job died {job.attempts - 1} "
                                                        "times; giving up")
    spec = JobCreate.model_validate(job.spec)
    checkpoints = CheckpointStore(job_id, settings)
    deadline = time.monotonic() + job.time_limit_s
    ctx = RunContext(report=ProgressWriter(job_id, settings.progress_interval_s),
                     should_stop=StopCheck(job_id, deadline), save_checkpoint=checkpoints.save,
                     load_checkpoint=checkpoints.load, device=resolve_device(settings.device, settings.torch_threads), seed=spec.seed)
    with Heartbeat(job_id, WORKER_NAME, settings.heartbeat_interval_s), tempfile.TemporaryDirectory() as scratch:
        try:
            return _run(job, spec, ctx, Path(scratch), settings, checkpoints)
        except Cancelled as stop:
            if stop.reason == "time_limit_exceeded":
                return _finish(job_id, "failed", "time_limit_exceeded",
                               f"the job ran past its time limit of {job.time_limit_s} s")
            return _finish(job_id, "cancelled", "cancelled", "cancelled by the user while running")
        except ValueError as exc:
            # The library raises ValueError for inputs it cannot work with; the message is meant for the user.
            log.warning("job %s failed on its inputs: %s", job_id, exc)
            return _finish(job_id, "failed", "invalid_input", str(exc))
        except Exception as exc:  # the job must end failed with its reason, never stay "running"
            log.error("job %s crashed:\n%s", job_id, traceback.format_exc())
            return _finish(job_id, "failed", "internal_error", f"{type(exc).__name__}: {exc}")


def _run(job: Job, spec: JobCreate, ctx: RunContext, scratch: Path, settings: Settings,
         checkpoints: CheckpointStore) -> str:
    from compression.pipeline import run_pipeline
    from compression.students import set_model_resolver

    ctx.progress("load", 0, 1)
    model_path, dataset_path = fetch_inputs(job.id, scratch)
    set_model_resolver(model_resolver(job, scratch))
    workdir = scratch / "out"
    workdir.mkdir()
    result = run_pipeline(model_path, dataset_path, spec.stages, spec.evaluation, ctx, workdir,
                          train_split=spec.train_split)
    ctx.progress("store", 0, 1)
    for index, outcome in enumerate(result.stages):
        store_stage_artifacts(job, index, outcome, settings)
    checkpoints.clear()
    return _finish(job.id, "succeeded", None, None, metrics=result.to_metrics())


def _finish(job_id: str, status: str, code: str | None, message: str | None, metrics: dict | None = None) -> str:
    values = {"status": status, "error_code": code, "error_message": message, "finished_at": utcnow()}
    if metrics is not None:
        values["metrics"] = metrics
    if status == "succeeded":
        values["progress"] = {"phase": "done", "step": 1, "total": 1, "fraction": 1.0}
    with session_scope() as session:
        session.execute(update(Job).where(Job.id == job_id, Job.worker == WORKER_NAME).values(**values))
    log.info("job %s %s%s", job_id, status, f" ({code}: {message})" if code else "")
    return status
