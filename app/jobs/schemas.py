from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, computed_field

from app.core.schemas import Out
from core.jobs.status import JobStatus


class Progress(BaseModel):
    stage: str | None = None
    phase: str | None = None
    step: int = 0
    total: int = 0
    fraction: float = Field(0.0, description="Progress of the current phase (step / total).")
    overall: float = Field(0.0, description="Progress of the whole job across its stages, 0 to 1.")
    metrics: dict = Field({}, description="The phase's latest figures (loss, eta_s: seconds left in the phase).")


class JobError(BaseModel):
    code: str
    message: str


class WebhookOut(BaseModel):
    url: str
    status: str | None = Field(None, description="pending, retrying: <why>, delivered (HTTP <code>) or "
                                                 "failed: <why>")
    attempts: int = 0


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
    webhook: WebhookOut | None = None
    time_limit_s: int
    queue: str = Field(description="Worker queue the job was sent to (cpu or gpu).")
    waiting_reason: str | None = Field(None, description="Why a queued job has not started (no live worker "
                                                         "of its kind, none with enough memory).")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @computed_field(description="Quality warnings of the job's stages (e.g. a stage whose measured metric "
                                "collapsed), also under metrics.warnings; empty when there are none.")
    @property
    def warnings(self) -> list[str]:
        return list(self.metrics.get("warnings") or [])


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
