"""The embedded default: objects as files under a directory (`file:///path`, default `<data_dir>/store`).

Writes go to a temporary file in the same file system, are flushed to disk, then renamed into place, so a reader
or a crash never sees half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator

from core.store.base import (
    READ_CHUNK_BYTES,
    HashingReader,
    ObjectMissing,
    ObjectStore,
    StoredObject,
    Written,
    check_key,
)

TMP_DIR = ".tmp"


class LocalStore(ObjectStore):
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.url = self.root.as_uri()
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = check_key(key).split("/")
        if parts[0] == TMP_DIR:
            raise ValueError(f"invalid store key {key!r}")
        return self.root.joinpath(*parts)

    def write(self, key: str, source: BinaryIO, limit: int | None = None) -> Written:
        target = self._path(key)
        reader = HashingReader(source, limit)
        handle, temp = tempfile.mkstemp(dir=self.root / TMP_DIR)
        try:
            with os.fdopen(handle, "wb") as out:
                while chunk := reader.read(READ_CHUNK_BYTES):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        return reader.written()

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        try:
            source = open(self._path(key), "rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        with source:
            size = os.fstat(source.fileno()).st_size
            last = size - 1 if end is None else min(end, size - 1)
            source.seek(start)
            remaining = last - start + 1
            while remaining > 0 and (chunk := source.read(min(READ_CHUNK_BYTES, remaining))):
                remaining -= len(chunk)
                yield chunk

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def move(self, source_key: str, target_key: str) -> None:
        target = self._path(target_key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self._path(source_key), target)
        except FileNotFoundError:
            raise ObjectMissing(source_key) from None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> int:
        count = super().delete_prefix(prefix)
        if prefix.endswith("/") and (self.root / prefix).is_dir():
            shutil.rmtree(self.root / prefix, ignore_errors=True)  # the emptied directories
        return count

    def list(self, prefix: str) -> Iterator[StoredObject]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return
        for directory, dirs, files in os.walk(base):
            if Path(directory) == self.root:
                dirs[:] = [d for d in dirs if d != TMP_DIR]
            for name in files:
                path = Path(directory, name)
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    stat = path.stat()
                    yield StoredObject(key, stat.st_size, datetime.fromtimestamp(stat.st_mtime, timezone.utc))
