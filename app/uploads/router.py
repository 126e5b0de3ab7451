"""Resumable uploads of models and datasets (for files of many GB, or connections that drop):

    POST   /v1/uploads                          declare the file: kind, name, size_bytes, sha256 -> session
    PUT    /v1/uploads/{id}/parts/{n}           raw bytes of part n (from 0), header X-Checksum-SHA256
    GET    /v1/uploads/{id}                     which parts arrived: resume by sending the others
    POST   /v1/uploads/{id}/complete            assemble, check, validate -> the model or dataset
    DELETE /v1/uploads/{id}                     abandon it (its parts are deleted)
"""

import tempfile
from typing import Annotated

from fastapi import APIRouter, Header, Path, Request, Response
from starlette.concurrency import run_in_threadpool

from app.auth.dependencies import SessionDep, TenantDep
from app.core.errors import (
    BadRequest,
    Conflict,
    InternalError,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    Unauthorized,
    responses,
)
from app.resources.schemas import DatasetOut, ModelOut, Task
from app.uploads import service
from app.uploads.schemas import PartOut, UploadCreate, UploadOut
from core.config import get_settings
from core.db.models import UploadSession

router = APIRouter(prefix="/v1/uploads", tags=["uploads"],
                   responses=responses(BadRequest, Unauthorized, InvalidInput, InternalError))
SPOOL_IN_MEMORY_BYTES = 1024**2


def upload_out(session, upload: UploadSession) -> UploadOut:
    result = service.result(session, upload)
    schema = ModelOut if upload.kind == "model" else DatasetOut
    return UploadOut(id=upload.id, kind=upload.kind, name=upload.name, size_bytes=upload.size_bytes,
                     sha256=upload.sha256, part_bytes=upload.part_bytes, parts_total=service.parts_total(upload),
                     parts_received=[part.number for part in service.received(session, upload)],
                     bytes_received=service.bytes_received(session, upload), expires_at=upload.expires_at,
                     result=schema.model_validate(result) if result is not None else None)


@router.post("", status_code=201, response_model=UploadOut, responses=responses(PayloadTooLarge, QuotaExceeded))
def create_upload(session: SessionDep, tenant: TenantDep, request: UploadCreate) -> UploadOut:
    """Start a resumable upload. 413 over the size limit of its kind, 429 over the storage quota. The session
    expires after MODELPRESS_UPLOAD_SESSION_TTL_S unless completed."""
    return upload_out(session, service.create(session, tenant, request, get_settings()))


@router.get("/{upload_id}", response_model=UploadOut, responses=responses(NotFound))
def get_upload(session: SessionDep, tenant: TenantDep, upload_id: str) -> UploadOut:
    return upload_out(session, service.get(session, tenant, upload_id))


@router.put("/{upload_id}/parts/{number}", response_model=PartOut,
            responses=responses(NotFound, Conflict, PayloadTooLarge),
            openapi_extra={"requestBody": {"required": True,
                                           "content": {"application/octet-stream": {"schema": {
                                               "type": "string", "format": "binary"}}}}})
async def put_part(request: Request, session: SessionDep, tenant: TenantDep, upload_id: str,
                   number: Annotated[int, Path(ge=0, le=99_999)],
                   checksum: Annotated[str, Header(alias="X-Checksum-SHA256", pattern=r"^[0-9a-f]{64}$",
                                                   description="sha256 of this part, lower-case hex")]) -> PartOut:
    """Store part `number` (0-based; every part is `part_bytes` long but the last). Sending a part again replaces
    it. 422 if its length or sha256 is wrong (it is then not stored: send it again)."""
    with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY_BYTES, dir=get_settings().data_dir) as body:
        async for chunk in request.stream():
            body.write(chunk)  # to the page cache, past the first MiB: no wait worth a thread
        body.seek(0)
        part = await run_in_threadpool(service.put_part, session, tenant, upload_id, number, body, checksum)
    return PartOut(number=part.number, size_bytes=part.size_bytes, sha256=part.sha256)


@router.post("/{upload_id}/complete", response_model=UploadOut, responses=responses(NotFound, Conflict,
                                                                                     QuotaExceeded))
def complete_upload(session: SessionDep, tenant: TenantDep, upload_id: str, task: Task = None) -> UploadOut:
    """Assemble the parts, check the whole file's size and sha256, validate it like a normal upload (422 says
    what is wrong) and store it: `result` is the new model or dataset. A model may be a `.pt2` or a Hugging Face
    folder (`.zip`/`.tar`, with `task` as for POST /v1/models), a dataset an `.npz` or a `.jsonl`; a file
    compressed as a whole (gzip, xz, bz2) is stored decompressed, and `result`'s size and sha256 are then the
    decompressed file's. 409 lists missing parts. Repeating it returns the same result."""
    return upload_out(session, service.complete(session, tenant, upload_id, get_settings(), task))


@router.delete("/{upload_id}", status_code=204, responses=responses(NotFound))
def abort_upload(session: SessionDep, tenant: TenantDep, upload_id: str) -> Response:
    service.abort(session, tenant, upload_id)
    return Response(status_code=204)
