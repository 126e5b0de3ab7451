"""The interface every storage backend implements, and the key layout shared by all of them.

Keys are '/'-separated paths relative to the store's root. Every write is atomic (a reader sees the whole object
or none of it) and streamed: no backend holds a whole file in memory. Layout:

    tenants/<tenant>/sha256/<hex>              a blob: content-addressed, so the same bytes are stored once
    tenants/<tenant>/staging/<random>          a write in progress, moved to its sha256 key once hashed
    tenants/<tenant>/uploads/<session>/<part>  a part of a resumable upload
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Iterator

READ_CHUNK_BYTES = 1024**2


def check_key(key: str) -> str:
    """Keys are relative paths without empty, '.' or '..' parts: none can name anything outside the store."""
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid store key {key!r}")
    return key


def tenant_prefix(tenant_id: str) -> str:
    return f"tenants/{tenant_id}/"


def blob_key(tenant_id: str, sha256: str) -> str:
    return f"{tenant_prefix(tenant_id)}sha256/{sha256}"


def staging_key(tenant_id: str, token: str) -> str:
    return f"{tenant_prefix(tenant_id)}staging/{token}"


def upload_prefix(tenant_id: str, session_id: str) -> str:
    return f"{tenant_prefix(tenant_id)}uploads/{session_id}/"


def part_key(tenant_id: str, session_id: str, number: int) -> str:
    return f"{upload_prefix(tenant_id, session_id)}{number:05d}"


@dataclass(frozen=True)
class Written:
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class StoredObject:
    key: str
    size_bytes: int
    modified_at: datetime


class HashingReader:
    """Wraps a readable stream, counting and hashing what is read through it (in order, once)."""

    def __init__(self, source: BinaryIO, limit: int | None = None):
        self.source, self.limit = source, limit
        self.digest, self.size = hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = READ_CHUNK_BYTES
        data = self.source.read(size)
        self.digest.update(data)
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise TooLarge(f"more than {self.limit} bytes")
        return data

    def written(self) -> Written:
        return Written(self.size, self.digest.hexdigest())


class TooLarge(ValueError):
    """A stream was longer than the caller allowed."""


class ObjectMissing(KeyError):
    """The key names no object in the store."""


class ObjectStore(ABC):
    """A flat namespace of immutable objects. Implementations: `core.store.local`, `core.store.s3`."""

    url: str

    @abstractmethod
    def write(self, key: str, source: BinaryIO, limit: int | None = None) -> Written:
        """Stream `source` into `key` atomically, hashing on the way; raises TooLarge past `limit` bytes (and
        writes nothing)."""

    @abstractmethod
    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes [start, end] (inclusive, like HTTP ranges) of an object, a chunk at a time."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def move(self, source_key: str, target_key: str) -> None:
        """Rename an object (atomically replacing the target)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete an object; no error if it is absent."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[StoredObject]:
        """Every object whose key starts with `prefix`."""

    def ensure_ready(self) -> None:
        """Create what the store needs before first use (an S3 bucket); `modelpress migrate` calls it."""

    def delete_prefix(self, prefix: str) -> int:
        keys = [stored.key for stored in self.list(prefix)]
        for key in keys:
            self.delete(key)
        return len(keys)

    def presign(self, key: str, filename: str, expires_s: int) -> str | None:
        """A URL a client can GET the object from directly (Range works there too), or None where the store
        cannot hand one out: the API then streams the object itself."""
        return None

    def copy_to_file(self, key: str, path) -> None:
        with open(path, "wb") as target:
            for chunk in self.read(key):
                target.write(chunk)
