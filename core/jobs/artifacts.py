"""What a job has stored: its artifacts (the files users download) and its checkpoints (for resuming)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Artifact, Job, JobCheckpoint
from core.store.blobs import delete_blob

# The kind of artifact that holds a runnable model a later job can start from (parent_job_id).
MODEL_ARTIFACT = "model.pt2"


def final_model_artifact(session: Session, job: Job) -> Artifact | None:
    return session.scalars(select(Artifact).where(Artifact.job_id == job.id, Artifact.kind == MODEL_ARTIFACT)
                           .order_by(Artifact.stage_index.desc(), Artifact.created_at.desc())).first()


def delete_artifacts(session: Session, job_id: str) -> None:
    for artifact in session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all():
        blob_id = artifact.blob_id
        session.delete(artifact)
        session.flush()
        delete_blob(session, blob_id)


def delete_checkpoints(session: Session, job_id: str) -> None:
    for checkpoint in session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job_id)).all():
        blob_id = checkpoint.blob_id
        session.delete(checkpoint)
        session.flush()
        delete_blob(session, blob_id)
