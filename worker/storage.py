"""Moving files between the store and the worker's scratch directory."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from sqlalchemy import select

from app.config import Settings
from app.db.models import Artifact, Blob, Dataset, Job, JobCheckpoint, Model, utcnow
from app.db.session import session_scope
from app.jobs.service import MODEL_ARTIFACT, final_model_artifact
from app.store.blobs import copy_to_file, delete_blob, read_blob, write_blob, write_file
from compression.inspect import inspect_pt2
from compression.result import StageResult

if TYPE_CHECKING:
    import torch


def fetch_inputs(job_id: str, directory: Path) -> tuple[Path, Path]:
    """Copy the job's model (upload or parent job's final model) and dataset into `directory`."""
    with session_scope() as session:
        job = session.get(Job, job_id)
        if job.parent_job_id:
            parent = session.get(Job, job.parent_job_id)
            model_blob = session.get(Blob, final_model_artifact(session, parent).blob_id)
        else:
            model_blob = session.get(Blob, session.get(Model, job.model_id).blob_id)
        dataset_blob = session.get(Blob, session.get(Dataset, job.dataset_id).blob_id)
        model_path = copy_to_file(session, model_blob, directory / "input.pt2")
        dataset_path = copy_to_file(session, dataset_blob, directory / "dataset.npz")
    return model_path, dataset_path


def store_stage_artifacts(job: Job, stage_index: int, result: StageResult, settings: Settings) -> None:
    with session_scope() as session:
        for artifact in result.artifacts:
            details = dict(artifact.metadata)
            if artifact.kind == MODEL_ARTIFACT:
                # The signature lets a later job start from this model (parent_job_id) and be validated.
                details["signature"] = inspect_pt2(artifact.path).to_json()
            blob = write_file(session, artifact.path, settings.blob_chunk_bytes)
            session.add(Artifact(tenant_id=job.tenant_id, job_id=job.id, stage_index=stage_index,
                                 name=artifact.name, kind=artifact.kind, blob_id=blob.id,
                                 size_bytes=blob.size_bytes, sha256=blob.sha256, details=details))


def model_resolver(job: Job, directory: Path) -> Callable[[str], "torch.nn.Module"]:
    """Load another upload of the job's tenant by id (e.g. a distillation student), as the library asks for it."""
    def resolve(model_id: str):
        from compression.io import load_model
        with session_scope() as session:
            model = session.get(Model, model_id)
            if model is None or model.tenant_id != job.tenant_id:
                raise ValueError(f"model {model_id} no longer exists; upload the student again")
            path = copy_to_file(session, session.get(Blob, model.blob_id), directory / f"{model_id}.pt2")
        return load_model(path)
    return resolve


class CheckpointStore:
    """ctx.save_checkpoint / ctx.load_checkpoint backed by the job_checkpoints table (latest one per name)."""

    def __init__(self, job_id: str, settings: Settings):
        self.job_id, self.chunk_bytes = job_id, settings.blob_chunk_bytes

    def save(self, name: str, data: bytes) -> None:
        with session_scope() as session:
            blob = write_blob(session, io.BytesIO(data), self.chunk_bytes)
            existing = session.get(JobCheckpoint, (self.job_id, name))
            if existing:
                old_blob, existing.blob_id, existing.updated_at = existing.blob_id, blob.id, utcnow()
                session.flush()
                delete_blob(session, old_blob)
            else:
                session.add(JobCheckpoint(job_id=self.job_id, name=name, blob_id=blob.id))

    def load(self, name: str) -> bytes | None:
        with session_scope() as session:
            checkpoint = session.get(JobCheckpoint, (self.job_id, name))
            if checkpoint is None:
                return None
            return b"".join(read_blob(session, session.get(Blob, checkpoint.blob_id)))

    def clear(self) -> None:
        with session_scope() as session:
            for checkpoint in session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == self.job_id)):
                blob_id = checkpoint.blob_id
                session.delete(checkpoint)
                session.flush()
                delete_blob(session, blob_id)
