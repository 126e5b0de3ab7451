"""What a job has stored: its artifacts (the files users download) and its checkpoints (for resuming)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.models import Artifact, Job, JobCheckpoint
from core.store.blobs import release_blobs

# The kind of artifact that holds a runnable model a later job can start from (parent_job_id).
MODEL_ARTIFACT = "model.pt2"


def final_model_artifact(session: Session, job: Job) -> Artifact | None:
    return session.scalars(select(Artifact).where(Artifact.job_id == job.id, Artifact.kind == MODEL_ARTIFACT)
                           .order_by(Artifact.stage_index.desc(), Artifact.created_at.desc())).first()


def delete_artifacts(session: Session, job_id: str) -> None:
    _delete_with_blobs(session, session.scalars(select(Artifact).where(Artifact.job_id == job_id)).all())


def delete_checkpoints(session: Session, job_id: str) -> None:
    _delete_with_blobs(session, session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job_id)).all())


def delete_job(session: Session, job: Job) -> None:
    """Delete a job with its artifacts and checkpoints, and their blobs no other row uses."""
    blob_ids = [*session.scalars(select(Artifact.blob_id).where(Artifact.job_id == job.id)),
                *session.scalars(select(JobCheckpoint.blob_id).where(JobCheckpoint.job_id == job.id))]
    session.delete(job)  # artifacts and checkpoints go with it (ON DELETE CASCADE)
    release_blobs(session, blob_ids)


def _delete_with_blobs(session: Session, rows: list) -> None:
    for row in rows:
        session.delete(row)
    release_blobs(session, [row.blob_id for row in rows])
