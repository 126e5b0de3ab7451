from typing import Annotated

from fastapi import APIRouter, Body, Query, Response
from fastapi.responses import JSONResponse

from app.auth.dependencies import SessionDep, TenantDep
from app.core.errors import (
    BadRequest,
    Conflict,
    IdempotencyKeyReused,
    InternalError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
    responses,
)
from app.core.idempotency import IdempotencyKey, json_fingerprint, respond_once
from app.core.pagination import Limit, Offset
from app.core.schemas import Page
from app.jobs import service
from app.jobs.examples import JOB_EXAMPLES
from app.jobs.schemas import ArtifactOut, JobOut
from core.config import get_settings
from core.db.models import Artifact, Job
from core.jobs.spec import JobCreate
from core.jobs.status import JobStatus

router = APIRouter(prefix="/v1", tags=["jobs"],
                   responses=responses(BadRequest, Unauthorized, InvalidInput, InternalError))


def job_out(job: Job) -> JobOut:
    error = {"code": job.error_code, "message": job.error_message or ""} if job.error_code else None
    spec, webhook = dict(job.spec or {}), None
    if spec.get("webhook"):
        # The signing secret is the tenant's own, but it is never echoed: a leaked response must not leak it.
        spec["webhook"] = {"url": spec["webhook"]["url"], "secret": "(hidden)"}
        webhook = {"url": spec["webhook"]["url"], "status": job.webhook_status, "attempts": job.webhook_attempts}
    return JobOut.model_validate({**{c: getattr(job, c) for c in JobOut.model_fields if hasattr(job, c)},
                                  "error": error, "progress": job.progress or {}, "spec": spec,
                                  "webhook": webhook})


def artifact_out(artifact: Artifact) -> ArtifactOut:
    return ArtifactOut.model_validate({**{c: getattr(artifact, c) for c in ArtifactOut.model_fields
                                          if hasattr(artifact, c)},
                                       "download_url": f"/v1/artifacts/{artifact.id}"})


@router.post("/jobs", status_code=201, response_model=JobOut,
             responses=responses(Conflict, PayloadTooLarge, InvalidInput, IdempotencyKeyReused, QuotaExceeded))
def submit_job(session: SessionDep, tenant: TenantDep,
               spec: Annotated[JobCreate, Body(openapi_examples=JOB_EXAMPLES)],
               idempotency_key: IdempotencyKey = None) -> JSONResponse:
    """Validate the spec against the model and dataset, store the job and queue it.

    Everything that can be checked now is: a job bound to fail is refused with 422 and a message saying what to
    fix (unknown method or field, missing split, input shape or dtype mismatch, labels outside the model's
    classes, layer patterns matching no layer). 429 when the tenant has its quota of active jobs. With an
    `Idempotency-Key`, a retry returns the first job instead of submitting another."""
    return respond_once(session, tenant, idempotency_key, "POST /v1/jobs", lambda: json_fingerprint(spec), 201,
                        lambda: job_out(service.create_job(session, tenant, spec, get_settings())))


@router.get("/jobs", response_model=Page[JobOut])
def list_jobs(session: SessionDep, tenant: TenantDep, status: JobStatus | None = None,
              model_id: Annotated[str | None, Query(max_length=64, description="Only jobs on this model.")] = None,
              limit: Limit = 50, offset: Offset = 0) -> dict:
    jobs, total = service.list_jobs(session, tenant, status, limit, offset, model_id)
    return {"items": [job_out(j) for j in jobs], "total": total, "limit": limit, "offset": offset}


@router.get("/jobs/{job_id}", response_model=JobOut, responses=responses(NotFound))
def get_job(session: SessionDep, tenant: TenantDep, job_id: str) -> JobOut:
    """Status, progress (stage, phase, step, total, fraction), metrics, error and versions used."""
    return job_out(service.get_job(session, tenant, job_id))


@router.delete("/jobs/{job_id}", status_code=204, responses=responses(NotFound, Conflict))
def delete_job(session: SessionDep, tenant: TenantDep, job_id: str) -> Response:
    """Delete a finished job and its artifacts (which count against the storage quota); 409 while it is queued
    or running."""
    service.delete_job(session, tenant, job_id)
    return Response(status_code=204)


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=responses(NotFound, Conflict,
                                                                                 PayloadTooLarge))
def cancel_job(session: SessionDep, tenant: TenantDep, job_id: str) -> JobOut:
    """Cancel a job: a queued job at once, a running one at the method's next step."""
    return job_out(service.cancel_job(session, tenant, job_id))


@router.get("/jobs/{job_id}/artifacts", response_model=list[ArtifactOut], responses=responses(NotFound))
def list_artifacts(session: SessionDep, tenant: TenantDep, job_id: str) -> list[ArtifactOut]:
    return [artifact_out(a) for a in service.list_artifacts(session, tenant, job_id)]
