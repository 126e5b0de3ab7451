"""Artifact downloads. Where the store can presign (S3), the answer is a 307 redirect to a short-lived URL of the
object itself (Range works there too), so the bytes never pass through the API; otherwise (the local store) the
API streams the object chunk by chunk, with sha256 and single-range requests. Both carry X-Checksum-SHA256."""

from __future__ import annotations

import re
from typing import Annotated, Iterator

from fastapi import APIRouter, Header
from fastapi.responses import RedirectResponse, StreamingResponse

from app.auth.dependencies import SessionDep, TenantDep
from app.core.errors import BadRequest, InternalError, NotFound, RangeNotSatisfiable, Unauthorized, responses
from app.jobs import service
from core.config import get_settings
from core.db.models import Blob
from core.db.session import session_scope
from core.store import get_store
from core.store.blobs import key_of, read_blob

router = APIRouter(prefix="/v1", tags=["artifacts"], responses=responses(BadRequest, Unauthorized, InternalError))
# Positions have at most 18 digits (files are far smaller than 10**18 bytes); longer ones are refused before int()
# meets them, which past 4300 digits would raise instead of parsing.
_RANGE = re.compile(r"^bytes=(\d{0,18})-(\d{0,18})$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Inclusive (start, end) of a single `bytes=` range, or None for the whole file.

    Multiple ranges are answered with the whole file, which RFC 9110 allows."""
    if not header or "," in header:
        return None
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        raise RangeNotSatisfiable(f"malformed Range header {header[:60]!r}; use e.g. 'bytes=0-1023' (positions "
                                  "of at most 18 digits)")
    first, last = match.groups()
    if first == "":
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise RangeNotSatisfiable(f"range {header[:60]!r} is outside the file's {size} bytes")
    return start, end


def _stream(blob_id: str, start: int, end: int) -> Iterator[bytes]:
    # Its own session: the request's session is closed once the endpoint returns, before the body is sent.
    with session_scope() as session:
        blob = session.get(Blob, blob_id)
    yield from read_blob(blob, start, end)


@router.get("/artifacts/{artifact_id}", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "The file; headers carry X-Checksum-SHA256 and Content-Length."},
                       206: {"description": "The requested byte range (Content-Range)."},
                       307: {"description": "Where the store presigns: the file is at the URL in Location "
                                            "(valid MODELPRESS_STORE_PRESIGN_EXPIRES_S; send no Authorization "
                                            "header there). X-Checksum-SHA256 is set."},
                       **responses(NotFound, RangeNotSatisfiable)})
def download_artifact(session: SessionDep, tenant: TenantDep, artifact_id: str,
                      range_header: Annotated[str | None, Header(alias="Range")] = None):
    artifact = service.get_artifact(session, tenant, artifact_id)
    settings = get_settings()
    if settings.store_presign_downloads:
        url = get_store().presign(key_of(session.get(Blob, artifact.blob_id)), artifact.name,
                                  settings.store_presign_expires_s)
        if url:
            return RedirectResponse(url, status_code=307, headers={"X-Checksum-SHA256": artifact.sha256})
    size = artifact.size_bytes
    byte_range = parse_range(range_header, size)
    start, end = byte_range or (0, size - 1)
    headers = {"Content-Length": str(end - start + 1 if size else 0), "Accept-Ranges": "bytes",
               "X-Checksum-SHA256": artifact.sha256, "ETag": f'"{artifact.sha256}"',
               "Content-Disposition": f'attachment; filename="{artifact.name}"'}
    if byte_range:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(_stream(artifact.blob_id, start, end), status_code=206 if byte_range else 200,
                             media_type="application/octet-stream", headers=headers)
