"""Blobs stored in the database as ordered chunks, so uploads, downloads and copies never hold a whole file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO, Iterator

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from core.db.models import Blob, BlobChunk


def write_blob(session: Session, source: BinaryIO, chunk_bytes: int) -> Blob:
    """Copy a readable binary stream into a new blob, hashing on the way; memory stays at one chunk."""
    blob = Blob(chunk_bytes=chunk_bytes)
    session.add(blob)
    session.flush()
    digest, size, seq = hashlib.sha256(), 0, 0
    while chunk := source.read(chunk_bytes):
        digest.update(chunk)
        size += len(chunk)
        # Core insert: ORM objects would stay in the identity map and grow with the file.
        session.execute(insert(BlobChunk), [{"blob_id": blob.id, "seq": seq, "data": chunk}])
        seq += 1
    blob.size_bytes, blob.sha256 = size, digest.hexdigest()
    session.flush()
    return blob


def write_file(session: Session, path: Path, chunk_bytes: int) -> Blob:
    with open(path, "rb") as source:
        return write_blob(session, source, chunk_bytes)


def read_blob(session: Session, blob: Blob, start: int = 0, end: int | None = None) -> Iterator[bytes]:
    """Yield the bytes [start, end] (inclusive, like HTTP ranges) of a blob, one chunk query at a time."""
    last = blob.size_bytes - 1 if end is None else min(end, blob.size_bytes - 1)
    if blob.size_bytes == 0 or start > last:
        return
    for seq in range(start // blob.chunk_bytes, last // blob.chunk_bytes + 1):
        data = session.execute(select(BlobChunk.data).where(BlobChunk.blob_id == blob.id,
                                                            BlobChunk.seq == seq)).scalar_one()
        offset = seq * blob.chunk_bytes
        yield bytes(data[max(start - offset, 0): last - offset + 1])


def copy_to_file(session: Session, blob: Blob, path: Path) -> Path:
    with open(path, "wb") as target:
        for chunk in read_blob(session, blob):
            target.write(chunk)
    return path


def delete_blob(session: Session, blob_id: str) -> None:
    session.execute(delete(BlobChunk).where(BlobChunk.blob_id == blob_id))
    session.execute(delete(Blob).where(Blob.id == blob_id))
