"""The schema. Change it only through a migration in migrations/versions/."""

from __future__ import annotations

import secrets
from datetime import datetime, timezone

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from core.jobs.status import JobStatus


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


class UTCDateTime(TypeDecorator):
    """Timestamps are always UTC and timezone-aware; SQLite would otherwise hand them back naive."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON, datetime: UTCDateTime}


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("ten"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("key"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex; keys are random, so no salt
    prefix: Mapped[str] = mapped_column(String(16))  # shown to users to tell keys apart
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Blob(Base):
    """An object in the store (core/store/): content-addressed, so one row and one object per tenant and sha256,
    whatever number of models, datasets, artifacts or checkpoints use it."""

    __tablename__ = "blobs"
    __table_args__ = (UniqueConstraint("tenant_id", "sha256", name="uq_blobs_tenant_id_sha256"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("blob"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("mdl"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    # "pt2" (a torch.export program) or "hf_folder" (a Hugging Face folder, zipped or tarred)
    kind: Mapped[str] = mapped_column(String(16), default="pt2", server_default="pt2")
    task: Mapped[str | None] = mapped_column(String(32))  # a folder's: feature-extraction, ..., causal-lm
    signature: Mapped[dict]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("ds"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(300))
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    manifest: Mapped[dict]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("job"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"))
    dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id", ondelete="SET NULL"))
    parent_job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    spec: Mapped[dict]
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED, index=True)
    progress: Mapped[dict] = mapped_column(default=dict)
    metrics: Mapped[dict] = mapped_column(default=dict)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    versions: Mapped[dict] = mapped_column(default=dict)
    time_limit_s: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker: Mapped[str | None] = mapped_column(String(200))
    # Where and how the job is sent (core/routing.py): kept on the row so a re-send goes the same way.
    queue: Mapped[str] = mapped_column(String(32), default="cpu")
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer, default=5)  # 0-9, higher first; the API sets it per tenant
    # Why a queued job is not running yet (no worker of its kind, none large enough); shown to its owner.
    waiting_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    enqueued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    # Delivery of the job's webhook (spec.webhook): None without one, else "pending", "retrying: ...",
    # "delivered (HTTP 200)" or "failed: ...".
    webhook_status: Mapped[str | None] = mapped_column(String(300))
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0)


class Artifact(Base):
    __tablename__ = "artifacts"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("art"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    stage_index: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(64))
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobCheckpoint(Base):
    """Latest checkpoint of a running method, so a job re-run after a worker crash resumes."""

    __tablename__ = "job_checkpoints"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobLog(Base):
    """One line of a job's own log, for its user: what the worker did for it, its progress phases, the warnings
    its process logged, and the traceback of a failure the user caused. Numbered per job (`seq`, from 1) so a
    reader can ask for the lines after the last one it saw; at most `job_log_max_lines` per job."""

    __tablename__ = "job_logs"
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(16))  # worker, progress or job (the job's own process)
    message: Mapped[str] = mapped_column(Text)


class IdempotencyRecord(Base):
    """The first successful result of a request sent with an Idempotency-Key, replayed to retries of it.

    The primary key makes the key unique per tenant: of two concurrent requests with one key, one inserts this row
    and does the work; the other waits for that transaction and then replays its result."""

    __tablename__ = "idempotency_keys"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of the request body (or uploaded file + name)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[dict | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class UploadSession(Base):
    """A resumable upload: its parts are stored as they arrive (in any order, each checked against its sha256)
    and assembled on completion into a model or dataset."""

    __tablename__ = "upload_sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: new_id("upl"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "model" or "dataset"
    name: Mapped[str] = mapped_column(String(300))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    part_bytes: Mapped[int] = mapped_column(BigInteger)
    result_id: Mapped[str | None] = mapped_column(String(32))  # the model or dataset, once completed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class UploadPart(Base):
    __tablename__ = "upload_parts"
    session_id: Mapped[str] = mapped_column(ForeignKey("upload_sessions.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))


class Worker(Base):
    """A running worker process (one Celery node): what it can run, and a heartbeat that says it is alive."""

    __tablename__ = "workers"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # Celery node name, e.g. gpu0@host
    device: Mapped[str] = mapped_column(String(16))  # "cpu" or "gpu"
    memory_bytes: Mapped[int] = mapped_column(BigInteger)
    queues: Mapped[dict] = mapped_column(default=dict)  # {"names": [...]}: JSON, so SQLite and PostgreSQL agree
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Baseline(Base):
    """The uploaded model's measurements (metric, size, parameters) on a dataset, reused by the tenant's later
    jobs on the same inputs (core.jobs.baselines). `key` is a sha256 over the model's and the dataset's sha256,
    the evaluation settings and the library's versions: when any of them changes, the key does."""

    __tablename__ = "baselines"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_sha256: Mapped[str] = mapped_column(String(64))
    dataset_sha256: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
