"""A job's own log (`job_logs`, written by the worker: worker/joblog.py) and the reads the event stream makes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.auth.dependencies import SessionDep, TenantDep
from app.core.errors import BadRequest, InternalError, InvalidInput, NotFound, Unauthorized, responses
from app.core.ownership import get_owned
from core.db.models import Job, JobLog, Tenant
from core.db.session import session_scope

router = APIRouter(prefix="/v1", tags=["jobs"], responses=responses(BadRequest, Unauthorized, InvalidInput,
                                                                    InternalError))
MAX_SEQ = 2**31 - 1


class LogLine(BaseModel):
    seq: int = Field(description="Line number in the job's log, from 1.")
    at: datetime
    level: str = Field(description="DEBUG, INFO, WARNING or ERROR.")
    source: str = Field(description="worker (what the service did for the job), progress (a new stage or "
                                    "phase) or job (what the job's own process logged).")
    message: str


class LogPage(BaseModel):
    items: list[LogLine]
    next_after: int = Field(description="Pass as `after` to read the lines that follow (the same value when there "
                                        "are none yet).")


def read_lines(session: Session, job_id: str, after: int, limit: int) -> list[LogLine]:
    rows = session.scalars(select(JobLog).where(JobLog.job_id == job_id, JobLog.seq > after)
                           .order_by(JobLog.seq).limit(limit))
    return [LogLine.model_validate(row, from_attributes=True) for row in rows]


@dataclass
class Snapshot:
    job: Job
    lines: list[LogLine]


def snapshot(tenant: Tenant, job_id: str, after: int, limit: int) -> Snapshot:
    """The job and its log lines after `after`, read in one short session: the caller holds no connection
    between two of these (the event stream calls it from a worker thread on each poll)."""
    with session_scope() as session:
        job = get_owned(session, Job, tenant, job_id)
        return Snapshot(job, read_lines(session, job.id, after, limit))


@router.get("/jobs/{job_id}/logs", response_model=LogPage, responses=responses(NotFound))
def job_logs(session: SessionDep, tenant: TenantDep, job_id: str,
             after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Return lines after this seq.")] = 0,
             limit: Annotated[int, Query(ge=1, le=1000, description="Lines per page (1-1000).")] = 200) -> LogPage:
    """The job's own log: the worker's steps for it, each new stage and phase, the warnings its process logged, and
    the traceback of a failure caused by its input or spec (server paths replaced by placeholders). Page with
    `after` = the previous page's `next_after`."""
    job = get_owned(session, Job, tenant, job_id)
    lines = read_lines(session, job.id, after, limit)
    return LogPage(items=lines, next_after=lines[-1].seq if lines else after)
