from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.auth.dependencies import SessionDep, TenantDep
from app.core.errors import BadRequest, Conflict, InternalError, Unauthorized, error_response, responses
from app.tenant import service

router = APIRouter(prefix="/v1/tenant", tags=["tenant"], responses=responses(BadRequest, Unauthorized,
                                                                             InternalError))


@router.delete("/data", response_model=dict[str, int], responses=responses(Conflict))
def delete_tenant_data(session: SessionDep, tenant: TenantDep) -> dict[str, int] | JSONResponse:
    """Delete everything this tenant stores: jobs with their artifacts, models, datasets and resumable uploads,
    bytes included. API keys stay valid. Queued jobs are cancelled; while a job runs the answer is 409 (it has
    been asked to stop: repeat the request once it has). Returns how many of each were deleted."""
    running = service.running_jobs_after_cancel(session, tenant)
    if running:
        # Answered, not raised: the cancellations this request made are committed with it.
        return error_response(409, Conflict.code, f"{running} job(s) are still running; they have been asked to "
                              "stop. Repeat this request once they have (GET /v1/jobs?status=running)")
    return service.delete_tenant_data(session, tenant)
