"""Reading a zip archive whose every byte may be hostile: bounded, in chunks, counting what really comes out.

`zipfile` alone trusts too much: it builds an object per central-directory entry before anything is checked,
decompresses a bzip2/lzma member in one call whatever its size, and lets a caller read a member whole. Here the
directory is sized first, every entry name and compression method is checked when the archive is opened, and
members are only ever read in chunks under per-member and per-archive caps.
"""

from __future__ import annotations

import re
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from compression.archive.errors import InvalidUpload
from compression.archive.limits import ArchiveLimits

CHUNK_BYTES = 1 << 20
# Beyond the 46 fixed bytes, a central-directory entry holds its name, extra field and comment.
_DIRECTORY_BYTES_PER_ENTRY = 1024
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated"}
_METHOD_NAMES = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
_DRIVE = re.compile(r"^[A-Za-z]:")
# What a damaged member raises while it is decompressed (zlib.error: a corrupt deflate stream).
READ_ERRORS = (zipfile.BadZipFile, EOFError, OSError, zlib.error)


class BoundedZip:
    """An opened archive whose entries passed the name and method rules; `label` prefixes every message."""

    def __init__(self, source: str | Path | BinaryIO, limits: ArchiveLimits, label: str):
        self.limits, self.label = limits, label
        self._total = 0
        try:
            with _seekable(source) as file:
                _check_directory(file, limits)
            self._zip = zipfile.ZipFile(source)
        except InvalidUpload:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            raise NotAZip(str(exc)) from None
        self.members: dict[str, zipfile.ZipInfo] = {}
        for info in self._zip.infolist():
            check_entry_name(info.filename, label)
            if info.filename in self.members:
                raise InvalidUpload(f"{label}: entry '{info.filename}' appears twice; an archive names each file once")
            if info.compress_type not in _METHODS:
                method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
                raise InvalidUpload(f"{label}: entry '{info.filename}' is compressed with {method}; only stored and "
                                    "deflated entries are read (write the file with torch.export.save / numpy.savez)")
            if info.flag_bits & 0x1:
                raise InvalidUpload(f"{label}: entry '{info.filename}' is encrypted")
            self.members[info.filename] = info

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> "BoundedZip":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def open(self, name: str, cap: int | None = None) -> Iterator["MemberReader"]:
        """A reader of member `name` that refuses to go past `cap` (default: the per-member cap) or past the
        archive's total; damaged data raises InvalidUpload naming the entry."""
        cap = self.limits.max_member_bytes if cap is None else min(cap, self.limits.max_member_bytes)
        try:
            with self._zip.open(self.members[name]) as raw:
                yield MemberReader(self, name, raw, cap)
        except READ_ERRORS as exc:
            raise InvalidUpload(f"{self.label}: entry '{name}' is damaged or truncated ({exc}); upload the file "
                                "again") from None

    def count(self, name: str) -> int:
        """Read member `name` through (checking its CRC) and return its real uncompressed size."""
        with self.open(name) as member:
            member.drain()
            return member.size

    def read(self, name: str, cap: int) -> bytearray:
        """The whole member, which must not exceed `cap` bytes."""
        data = bytearray()
        with self.open(name, cap) as member:
            while chunk := member.read(CHUNK_BYTES):
                data += chunk
        return data

    def spool(self, name: str) -> BinaryIO:
        """The member copied to a seekable temporary file (on disk past a few MiB), e.g. to open a nested zip
        without holding it in memory."""
        copy = tempfile.SpooledTemporaryFile(max_size=8 * 1024**2)
        with self.open(name) as member:
            while chunk := member.read(CHUNK_BYTES):
                copy.write(chunk)
        copy.seek(0)
        return copy

    def _account(self, name: str, count: int) -> None:
        self._total += count
        if self._total > self.limits.max_total_bytes:
            raise InvalidUpload(f"{self.label}: entry '{name}' takes the archive past "
                                f"{self.limits.max_total_bytes} uncompressed bytes, the limit")


class MemberReader:
    """File-like view of one member that counts the bytes decompressed and stops at the caps."""

    def __init__(self, archive: BoundedZip, name: str, raw: BinaryIO, cap: int):
        self._archive, self.name, self._raw, self.cap = archive, name, raw, cap
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        # Never more than one chunk at a time, whatever the caller asks: the header's size is not believed.
        wanted = CHUNK_BYTES if size is None or size < 0 else min(size, CHUNK_BYTES)
        data = self._raw.read(wanted)
        self.size += len(data)
        if self.size > self.cap:
            raise InvalidUpload(f"{self._archive.label}: entry '{self.name}' is larger than {self.cap} bytes "
                                "uncompressed, the limit for it")
        self._archive._account(self.name, len(data))
        return data

    def read_exactly(self, size: int) -> bytes:
        parts, left = [], size
        while left > 0 and (chunk := self.read(left)):
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)

    def drain(self) -> None:
        while self.read(CHUNK_BYTES):
            pass


class NotAZip(Exception):
    """The source is not a readable zip at all; the caller words what the user should upload instead."""


def check_entry_name(name: str, label: str) -> None:
    """Entry names are relative paths inside the archive: no absolute, drive or backslash paths, no `..`."""
    if name.startswith("/") or _DRIVE.match(name) or "\\" in name or "\x00" in name:
        raise InvalidUpload(f"{label}: entry '{name}' has an absolute or non-POSIX path; entries must be "
                            "relative paths")
    # `zip -r model.zip folder` writes an entry for every directory ("folder/"), which readers then skip.
    path = name[:-1] if name.endswith("/") else name
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise InvalidUpload(f"{label}: entry '{name}' has an empty, '.' or '..' path component")


@contextmanager
def _seekable(source: str | Path | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(source, (str, Path)):
        with open(source, "rb") as file:
            yield file
    else:
        position = source.tell()
        try:
            yield source
        finally:
            source.seek(position)


def _check_directory(file: BinaryIO, limits: ArchiveLimits) -> None:
    # zipfile's own reader of the end-of-central-directory record (zip64 aware), used before zipfile reads and
    # parses the whole directory.
    end = zipfile._EndRecData(file)
    if end is None:
        raise NotAZip("File is not a zip file")
    entries, directory_bytes = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if entries > limits.max_entries or directory_bytes > limits.max_entries * _DIRECTORY_BYTES_PER_ENTRY:
        raise InvalidUpload(f"the archive lists {entries} entries in a {directory_bytes}-byte directory; the limit "
                            f"is {limits.max_entries} entries")
