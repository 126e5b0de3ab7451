from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core import quotas
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.ownership import get_owned
from app.jobs.patterns import checked_layers, pattern_problems
from app.jobs.validation import is_float_dtype, validate_job
from compression.inspect import DatasetManifest, ModelSignature, TensorSpec
from compression.specs.order import FINAL_STAGES
from core.config import Settings
from core.db.models import Artifact, Dataset, Job, Model, Tenant, utcnow
from core.db.session import after_commit
from core.jobs.artifacts import delete_job as delete_job_with_artifacts
from core.jobs.artifacts import final_model_artifact
from core.jobs.spec import JobCreate
from core.jobs.state import QUEUED_PROGRESS, request_cancel
from core.jobs.status import FINISHED, JobStatus
from core.queue import enqueue_job, send_webhook
from core.routing import NoWorkerCanRun, route
from core.workers import known_workers


def _owned(session: Session, kind, tenant: Tenant, resource_id: str, field: str):
    """A referenced row must exist for this tenant; a missing reference makes the request invalid (422)."""
    try:
        return get_owned(session, kind, tenant, resource_id)
    except NotFound:
        raise InvalidInput(f"{field}: {resource_id} not found") from None


def _input_signature(session: Session, tenant: Tenant, spec: JobCreate) -> dict:
    """The stored signature (JSON) of the model the job starts from."""
    if (spec.model_id is None) == (spec.parent_job_id is None):
        raise InvalidInput("give exactly one of model_id (an uploaded model) or parent_job_id (the final model "
                           "of an earlier job)")
    if spec.model_id:
        return _owned(session, Model, tenant, spec.model_id, "model_id").signature
    parent = _owned(session, Job, tenant, spec.parent_job_id, "parent_job_id")
    last_method = parent.spec["stages"][-1]["method"]
    if last_method in FINAL_STAGES:
        raise InvalidInput(f"parent_job_id: job {parent.id} ended with {last_method}: {FINAL_STAGES[last_method]}; "
                           "branch from a job that ends before that stage")
    artifact = final_model_artifact(session, parent) if parent.status == JobStatus.SUCCEEDED else None
    if artifact is None:
        raise InvalidInput(f"parent_job_id: job {parent.id} is {parent.status} and has no model to start from; "
                           "only a succeeded job with a .pt2 model artifact can be a parent")
    return artifact.details["signature"]


def _check_uploaded_students(session: Session, tenant: Tenant, spec: JobCreate, signature: ModelSignature) -> None:
    """A student given by model id must exist and take the same inputs and give the same outputs as the model."""
    for index, stage in enumerate(spec.stages):
        student = getattr(stage, "student", None)
        if getattr(student, "kind", None) != "upload":
            continue
        uploaded = ModelSignature.from_json(_owned(session, Model, tenant, student.model_id,
                                                   f"stages.{index}.student.model_id").signature)
        for what, theirs, ours in (("inputs", uploaded.inputs, signature.inputs),
                                   ("outputs", uploaded.outputs, signature.outputs)):
            if not _fits([_fit_key(t, what) for t in theirs], [_fit_key(t, what) for t in ours]):
                raise InvalidInput(f"stages.{index}.student: the student's {what} "
                                   f"{[t.describe() for t in theirs]} differ from the model's "
                                   f"{[t.describe() for t in ours]}")


def _fit_key(tensor: TensorSpec, what: str) -> tuple:
    """What a student's tensor must share with the model's. Outputs of any float width fit: the stages compute a
    half-precision model in float32 (`compression.half_precision`), so a float32 student stands in for it."""
    if what == "outputs" and is_float_dtype(tensor.dtype):
        return tensor.shape[1:], "float"
    return tensor.shape[1:], tensor.dtype


def _fits(theirs: list[tuple], ours: list[tuple]) -> bool:
    """Whether the student's tensors (`_fit_key`s) are the model's: as many, the same dtypes and ranks, and the
    same size on every axis both fix. An axis either leaves open fits any size: a Hugging Face folder's signature
    is read from its config, which does not fix every size (a ViT feature extractor's token count), while a
    student's .pt2 fixes what it was exported with."""
    if len(theirs) != len(ours):
        return False
    return all(len(their_shape) == len(our_shape) and their_dtype == our_dtype
               and all(a is None or b is None or a == b for a, b in zip(their_shape, our_shape))
               for (their_shape, their_dtype), (our_shape, our_dtype) in zip(theirs, ours))


def create_job(session: Session, tenant: Tenant, spec: JobCreate, settings: Settings) -> Job:
    stored_signature = _input_signature(session, tenant, spec)
    signature = ModelSignature.from_json(stored_signature)
    dataset = _owned(session, Dataset, tenant, spec.dataset_id, "dataset_id")
    validate_job(spec, signature, DatasetManifest.from_json(dataset.manifest), stored_signature.get("hf"))
    problems = pattern_problems(spec.stages, checked_layers(spec.stages, stored_signature))
    if problems:
        raise InvalidInput("; ".join(problems))
    _check_uploaded_students(session, tenant, spec, signature)
    time_limit = spec.time_limit_s or settings.job_time_limit_s
    if time_limit > settings.job_time_limit_s:
        raise InvalidInput(f"time_limit_s: {time_limit} exceeds this service's maximum of "
                           f"{settings.job_time_limit_s} s")
    quotas.check_job_quota(session, tenant, settings)
    try:
        where = route(spec, _model_bytes(session, spec), dataset.size_bytes, known_workers(session, settings),
                      settings)
    except NoWorkerCanRun as exc:
        raise InvalidInput(str(exc)) from None
    priority = settings.tenant_priorities.get(tenant.name, settings.default_priority)
    job = Job(tenant_id=tenant.id, model_id=spec.model_id, dataset_id=dataset.id, parent_job_id=spec.parent_job_id,
              spec=spec.model_dump(mode="json"), time_limit_s=time_limit, progress=QUEUED_PROGRESS, queue=where.queue,
              memory_bytes=where.memory_bytes, priority=priority, waiting_reason=where.waiting_reason,
              enqueued_at=utcnow() if where.send_now else None,
              webhook_status="pending" if spec.webhook else None)
    session.add(job)
    session.flush()
    if where.send_now:  # else no live worker fits it yet: the workers' reaper sends it when one does
        after_commit(session, lambda: enqueue_job(job.id, time_limit, where.queue, priority))
    return job


def _model_bytes(session: Session, spec: JobCreate) -> int:
    if spec.model_id:
        return session.get(Model, spec.model_id).size_bytes
    parent = session.get(Job, spec.parent_job_id)
    return final_model_artifact(session, parent).size_bytes


def get_job(session: Session, tenant: Tenant, job_id: str) -> Job:
    return get_owned(session, Job, tenant, job_id)


def list_jobs(session: Session, tenant: Tenant, status: str | None, limit: int, offset: int,
              model_id: str | None = None) -> tuple[list[Job], int]:
    query = select(Job).where(Job.tenant_id == tenant.id)
    if status:
        query = query.where(Job.status == status)
    if model_id:
        query = query.where(Job.model_id == model_id)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    jobs = session.scalars(query.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).all()
    return list(jobs), total


def cancel_job(session: Session, tenant: Tenant, job_id: str) -> Job:
    """A queued job is cancelled at once; a running one stops at the method's next step."""
    job = get_job(session, tenant, job_id)
    if job.status in FINISHED:
        raise Conflict(f"job {job_id} already {job.status}")
    request_cancel(session, job.id)
    session.refresh(job)
    if job.status == JobStatus.CANCELLED and job.webhook_status:
        # A queued job ends here, never reaching a worker: its webhook goes out from the API.
        after_commit(session, lambda: send_webhook(job.id))
    return job


def delete_job(session: Session, tenant: Tenant, job_id: str) -> None:
    """Delete a finished job with its artifacts, whose bytes count against the tenant's storage quota."""
    job = get_job(session, tenant, job_id)
    if job.status not in FINISHED:
        raise Conflict(f"job {job_id} is {job.status}; cancel it (POST /v1/jobs/{job_id}/cancel) and delete it "
                       "once it has stopped")
    delete_job_with_artifacts(session, job)


def list_artifacts(session: Session, tenant: Tenant, job_id: str) -> list[Artifact]:
    job = get_job(session, tenant, job_id)
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job.id)
                                .order_by(Artifact.stage_index, Artifact.created_at)))


def get_artifact(session: Session, tenant: Tenant, artifact_id: str) -> Artifact:
    return get_owned(session, Artifact, tenant, artifact_id)
