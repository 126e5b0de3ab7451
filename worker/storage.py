"""Moving files between the store and a job's scratch directory; only the worker touches the database and store.

Before the sandboxed process starts, everything it may need is copied in: the model, the dataset, uploaded
students named in the spec and the job's checkpoints. What it writes comes back through `worker.scratch`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.config import Settings
from core.db.models import Blob, Dataset, Job, JobCheckpoint, Model, utcnow
from core.db.session import session_scope
from core.jobs.artifacts import delete_checkpoints, final_model_artifact
from core.jobs.spec import JobCreate
from core.store.base import ObjectMissing
from core.store.blobs import copy_to_file, read_blob, release_blobs, write_blob
from worker.messages import checkpoint_file

log = logging.getLogger(__name__)


class MissingInput(ValueError):
    """Something the job names was deleted after it was submitted."""


def fetch_inputs(job: Job, spec: JobCreate, scratch: Path) -> dict:
    """Copy the job's inputs and checkpoints into `scratch`; returns the task's file fields (relative paths)."""
    files = {"model": "inputs/model.pt2", "model_kind": "pt2", "model_task": None, "dataset": "inputs/dataset.npz",
             "uploaded_models": {}, "checkpoints": "checkpoints", "workdir": "out"}
    with session_scope() as session:
        blob, files["model_kind"], files["model_task"] = _model_blob(session, job)
        if files["model_kind"] == "hf_folder":
            files["model"] = "inputs/model_folder.archive"  # a zip or a tar, told apart by content
        copy_to_file(blob, scratch / files["model"])
        dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
        if dataset is None:
            raise MissingInput("the job's dataset was deleted; upload it again and submit a new job")
        if dataset.manifest.get("format") == "jsonl":
            files["dataset"] = "inputs/dataset.jsonl"
        copy_to_file(session.get(Blob, dataset.blob_id), scratch / files["dataset"])
        for index, stage in enumerate(spec.stages):
            student = getattr(stage, "student", None)
            if getattr(student, "kind", None) != "upload":
                continue
            model = session.get(Model, student.model_id)
            if model is None or model.tenant_id != job.tenant_id:
                raise MissingInput(f"stages.{index}.student: model {student.model_id} no longer exists; upload "
                                   "the student again")
            # Named by position, never by the id the spec gives: no spec string becomes a path.
            relative = f"inputs/students/{index}.pt2"
            copy_to_file(session.get(Blob, model.blob_id), scratch / relative)
            files["uploaded_models"][student.model_id] = relative
        for checkpoint in session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job.id)):
            target = scratch / files["checkpoints"] / checkpoint_file(checkpoint.name)
            try:
                copy_to_file(session.get(Blob, checkpoint.blob_id), target)
            except ObjectMissing:
                target.unlink(missing_ok=True)  # opened before the store found nothing to read
                # A checkpoint is a shortcut, never an input: without it the stage starts from its beginning.
                log.warning("job %s: checkpoint %r has no object in the store; its stage starts over", job.id,
                            checkpoint.name)
    return files


def input_digests(job: Job) -> tuple[str, str]:
    """The sha256 of the job's model (an upload or a parent job's result) and of its dataset."""
    with session_scope() as session:
        dataset = session.get(Dataset, job.dataset_id) if job.dataset_id else None
        if dataset is None:
            raise MissingInput("the job's dataset was deleted; upload it again and submit a new job")
        return _model_blob(session, job)[0].sha256, dataset.sha256


def _model_blob(session: Session, job: Job) -> tuple[Blob, str, str | None]:
    """The blob of the model the job starts from, its kind ("pt2" or "hf_folder") and a folder's task."""
    if job.parent_job_id:
        parent = session.get(Job, job.parent_job_id)
        artifact = final_model_artifact(session, parent) if parent is not None else None
        if artifact is None:
            raise MissingInput("the job this one starts from (parent_job_id) no longer has a model")
        return session.get(Blob, artifact.blob_id), "pt2", None
    model = session.get(Model, job.model_id) if job.model_id else None
    if model is None:
        raise MissingInput("the job's model was deleted; upload it again and submit a new job")
    return session.get(Blob, model.blob_id), model.kind, model.task


class CheckpointStore:
    """A job's checkpoints in the job_checkpoints table (the latest one per name), their bytes in the store."""

    def __init__(self, job_id: str, settings: Settings):
        self.job_id = job_id
        with session_scope() as session:
            self.tenant_id = session.scalar(select(Job.tenant_id).where(Job.id == job_id))

    def save(self, name: str, source: BinaryIO) -> None:
        with session_scope() as session:
            blob = write_blob(session, self.tenant_id, source)
            existing = session.get(JobCheckpoint, (self.job_id, name))
            replaced = existing.blob_id if existing and existing.blob_id != blob.id else None
            if existing:
                existing.blob_id, existing.updated_at = blob.id, utcnow()
            else:
                session.add(JobCheckpoint(job_id=self.job_id, name=name, blob_id=blob.id))
        # The previous state is released only once the new one is committed, in a transaction of its own (whose
        # commit removes the object after the row): a worker killed in between leaves an unused blob that the
        # store's sweep removes (`modelpress store sweep`), never a checkpoint row naming missing bytes.
        if replaced:
            with session_scope() as session:
                release_blobs(session, [replaced])

    def load(self, name: str) -> bytes | None:
        with session_scope() as session:
            checkpoint = session.get(JobCheckpoint, (self.job_id, name))
            if checkpoint is None:
                return None
            return b"".join(read_blob(session.get(Blob, checkpoint.blob_id)))

    def clear(self) -> None:
        with session_scope() as session:
            delete_checkpoints(session, self.job_id)
