from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.core.schemas import Out
from core.jobs.status import JobStatus


class Progress(BaseModel):
    stage: str | None = None
    phase: str | None = None
    step: int = 0
    total: int = 0
    fraction: float = 0.0
    metrics: dict = {}


class JobError(BaseModel):
    code: str
    message: str


class JobOut(Out):
    model_config = ConfigDict(from_attributes=True, protected_namespaces=())

    id: str
    status: JobStatus
    model_id: str | None
    dataset_id: str | None
    parent_job_id: str | None
    spec: dict
    progress: Progress
    metrics: dict
    error: JobError | None
    versions: dict
    attempts: int
    cancel_requested: bool
    time_limit_s: int
    queue: str = Field(description="Worker queue the job was sent to (cpu or gpu).")
    waiting_reason: str | None = Field(None, description="Why a queued job has not started (no live worker "
                                                         "of its kind, none with enough memory).")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class ArtifactOut(Out):
    id: str
    job_id: str
    stage_index: int
    name: str
    kind: str
    size_bytes: int
    sha256: str
    details: dict
    created_at: datetime
    download_url: str
