"""Receiving an uploaded file: size limit, validation by the torch-free inspectors, then streaming into a blob."""

from __future__ import annotations

import os
from typing import Callable, TypeVar

from fastapi import UploadFile
from sqlalchemy.orm import Session

from app.core.errors import InvalidInput, PayloadTooLarge
from app.db.models import Blob
from app.store.blobs import write_blob
from compression.inspect import InvalidUpload

T = TypeVar("T")


def check_declared_size(content_length: int | None, limit: int, what: str) -> None:
    """Refuse before reading a byte when the client already says the body is too large."""
    if content_length is not None and content_length > limit + 64 * 1024:  # multipart framing overhead
        raise PayloadTooLarge(f"{what} upload is {content_length} bytes; the limit is {limit} bytes")


def store_upload(session: Session, file: UploadFile, limit: int, chunk_bytes: int, what: str,
                 inspect: Callable[..., T]) -> tuple[Blob, T]:
    """Validate the upload (spooled to disk by the multipart parser, so memory is bounded) and store it."""
    source = file.file
    source.seek(0, os.SEEK_END)
    size = source.tell()
    if size > limit:
        raise PayloadTooLarge(f"{what} file is {size} bytes; the limit is {limit} bytes")
    if size == 0:
        raise InvalidInput(f"the uploaded {what} file is empty")
    source.seek(0)
    try:
        inspected = inspect(source)
    except InvalidUpload as exc:
        raise InvalidInput(f"{file.filename or what}: {exc}") from None
    source.seek(0)
    return write_blob(session, source, chunk_bytes), inspected
