"""Receiving an uploaded file: key and quota checked before the body is read, size limits, a safe name,
validation by the torch-free inspectors, then streaming into the store."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import PurePath
from typing import AsyncIterator, BinaryIO, Callable, TypeVar

from fastapi import Request, UploadFile
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as ParsedFile

from app.auth.dependencies import SessionDep, TenantDep
from app.core import idempotency, quotas
from app.core.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from app.core.idempotency import KEY_HEADER
from app.core.middleware import MULTIPART_OVERHEAD
from compression.archive.compressed import ExpandsPastLimit, codec_of, decompress
from compression.inspect import InvalidUpload
from core.config import get_settings
from core.db.models import Blob, Tenant
from core.store.blobs import write_blob

T = TypeVar("T")
# Upload routes and the setting that limits their file; every other request body is a small JSON document.
UPLOAD_LIMITS = {"/v1/models": ("max_model_bytes", "a model upload"),
                 "/v1/datasets": ("max_dataset_bytes", "a dataset upload")}
MAX_NAME_CHARS = 200
_UPLOAD_PART = re.compile(r"^/v1/uploads/[^/]+/parts/\d{1,5}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def request_body_limit(method: str, path: str) -> tuple[int, str]:
    """(largest body in bytes, what it is) for a request; used by the body limit middleware."""
    settings = get_settings()
    if method == "POST" and path in UPLOAD_LIMITS:
        setting, what = UPLOAD_LIMITS[path]
        file_limit = getattr(settings, setting)
        return file_limit + MULTIPART_OVERHEAD, f"{what} (a file of up to {file_limit} bytes in multipart framing)"
    if method == "PUT" and _UPLOAD_PART.match(path):
        return settings.upload_part_max_bytes, "a part of a resumable upload (MODELPRESS_UPLOAD_PART_MAX_BYTES)"
    return settings.max_json_body_bytes, f"{method} {path}"


def upload_file(what: str) -> Callable[..., AsyncIterator[UploadFile]]:
    """A dependency yielding the multipart field `file`. The key, the declared size and the storage quota are
    checked before a byte of the body is read (FastAPI would otherwise spool the whole body first)."""

    async def dependency(request: Request, session: SessionDep, tenant: TenantDep) -> AsyncIterator[UploadFile]:
        settings = get_settings()
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            raise UnsupportedMediaType(f"send the {what} as multipart/form-data with the file in the field 'file' "
                                       f"(curl -F file=@path)")
        # The body limit middleware has already refused a declared length over the size limit; a retry whose
        # Idempotency-Key holds a result is answered with it whatever the quota is now.
        declared = int(request.headers.get("content-length", 0))
        if not await run_in_threadpool(idempotency.has_record, session, tenant, request.headers.get(KEY_HEADER)):
            await run_in_threadpool(quotas.check_storage, session, tenant, max(declared - MULTIPART_OVERHEAD, 0),
                                    settings)
        form = await request.form(max_files=1, max_fields=8)
        try:
            file = form.get("file")
            if not isinstance(file, ParsedFile):
                raise InvalidInput(f"the {what} must be sent in the multipart field 'file' (curl -F file=@path)")
            yield file
        finally:
            await form.close()

    return dependency


def upload_name(file: UploadFile, default: str) -> str:
    """The client's file name without directories, at most MAX_NAME_CHARS (the extension kept)."""
    return upload_name_of(file.filename, default)


def upload_name_of(filename: str | None, default: str) -> str:
    name = PurePath((filename or "").replace("\\", "/")).name or default
    if _CONTROL.search(name):
        raise InvalidInput(f"the file name {name!r} contains control characters (e.g. a NUL byte); rename the file")
    if len(name) > MAX_NAME_CHARS:
        suffix = PurePath(name).suffix[:16]
        name = name[:MAX_NAME_CHARS - len(suffix)] + suffix
    return name


def file_sha256(file: UploadFile) -> str:
    digest = hashlib.sha256()
    file.file.seek(0)
    while chunk := file.file.read(1024**2):
        digest.update(chunk)
    file.file.seek(0)
    return digest.hexdigest()


def store_upload(session: Session, tenant: Tenant, file: UploadFile, limit: int, what: str,
                 inspect: Callable[..., T]) -> tuple[Blob, T]:
    """Validate the upload (spooled to disk by the multipart parser, so memory is bounded) and store it; a
    gzip/bz2/xz-compressed file is inspected and stored decompressed, up to `limit` bytes (`inspect_and_store`)."""
    settings = get_settings()
    source = file.file
    source.seek(0, os.SEEK_END)
    size = source.tell()
    if size > limit:
        raise PayloadTooLarge(f"{what} file is {size} bytes; the limit is {limit} bytes")
    if size == 0:
        raise InvalidInput(f"the uploaded {what} file is empty")
    quotas.check_storage(session, tenant, size, settings)
    return inspect_and_store(session, tenant, source, size, file.filename or what, inspect,
                             decompress_limit=limit)


def inspect_and_store(session: Session, tenant: Tenant, source: BinaryIO, size: int, label: str,
                      inspect: Callable[..., T], decompress_limit: int | None = None) -> tuple[Blob, T]:
    """Validate a complete file (a 422 names `label` and what is wrong), store it, and check the tenant's storage
    quota again under the tenant lock: a concurrent upload may have used the quota meanwhile.

    With `decompress_limit` (the upload limit of the file's kind), a file compressed with gzip, bz2 or xz as a
    whole (`tar czf` is how model folders are usually packed; `gzip rows.jsonl`) is decompressed first, up to
    that many bytes (`compression.archive.compressed`), and the decompressed file is what is inspected, stored
    and counted against the quota."""
    with contextlib.ExitStack() as scratch:  # a file for the decompressed bytes, made only for a compressed upload
        source.seek(0)
        try:
            if decompress_limit is not None and codec_of(source.read(8)):
                plain = scratch.enter_context(tempfile.TemporaryFile(dir=get_settings().data_dir))
                size = decompress(source, plain, decompress_limit)
                quotas.check_storage(session, tenant, size, get_settings())
                source = plain
            source.seek(0)
            inspected = inspect(source)
        except ExpandsPastLimit as exc:
            raise PayloadTooLarge(f"{label}: {exc}") from None
        except InvalidUpload as exc:
            raise InvalidInput(f"{label}: {exc}") from None
        source.seek(0)
        blob = write_blob(session, tenant.id, source)
    quotas.lock_tenant(session, tenant)
    quotas.check_storage(session, tenant, size, get_settings())
    return blob, inspected
