"""A folder uploaded as a `.zip` or a plain `.tar`, read member by member under the archive rules.

Zip members go through `BoundedZip` (names, methods, chunked reads under the caps). A tar's 512-byte headers are
walked here first, before `tarfile` parses anything: `tarfile` reads a pax or GNU long-name header whole, at the
size the header claims, so those are capped at `max_metadata_bytes`; every other entry must be a regular file or
a directory (no symlinks, hard links, devices or FIFOs), sizes count towards the caps as the headers state them
(an uncompressed tar stores exactly that many bytes, and a short file is refused as truncated). Compressed tars are
decompressed once, at upload (`compression.archive.compressed`), and stored plain. Entries of one top-level folder
(what zipping or tarring a folder gives) are named without it.
"""

from __future__ import annotations

import tarfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from compression.archive.errors import InvalidUpload
from compression.archive.limits import ArchiveLimits
from compression.archive.zipread import CHUNK_BYTES, BoundedZip, NotAZip, check_entry_name

TAR_MAGIC_OFFSET = 257
_BLOCK = 512
_METADATA_TYPES = {b"x", b"g", b"L", b"K"}  # pax (per file, global) and GNU long name/link headers
_FILE_TYPES = {b"0", b"\x00", b"7"}
_DIRECTORY_TYPES = {b"5"}


def is_tar(source: BinaryIO) -> bool:
    position = source.tell()
    source.seek(TAR_MAGIC_OFFSET)
    magic = source.read(5)
    source.seek(position)
    return magic == b"ustar"


class FolderArchive:
    """`files`: name inside the folder -> (member name in the archive). `open(name)` reads one file in chunks
    under the per-member cap; `read(name, cap)` reads a small one whole."""

    def __init__(self, source: BinaryIO, limits: ArchiveLimits, label: str):
        self.limits, self.label = limits, label
        self._zip: BoundedZip | None = None
        self._tar: tarfile.TarFile | None = None
        self._tar_members: dict[str, tarfile.TarInfo] = {}
        self._total = 0
        if is_tar(source):
            names = self._open_tar(source)
        else:
            try:
                self._zip = BoundedZip(source, limits, label)
            except NotAZip as exc:
                raise InvalidUpload(f"{label} is neither a zip nor a tar archive ({exc})") from None
            names = [name for name in self._zip.members if not name.endswith("/")]
        self.files = _strip_top_folder(names, label)

    def _open_tar(self, source: BinaryIO) -> list[str]:
        _walk_tar_headers(source, self.limits, self.label)
        source.seek(0)
        try:
            self._tar = tarfile.open(fileobj=source, mode="r:")
            members = self._tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InvalidUpload(f"{self.label} is a damaged tar archive ({exc})") from None
        names = []
        for member in members:
            name = member.name.removeprefix("./").rstrip("/")  # `tar -cf x.tar .` writes ./config.json
            if member.isdir() and name in ("", "."):
                continue
            check_entry_name(name, self.label)
            if member.isdir():
                continue
            if not member.isreg():
                raise InvalidUpload(f"{self.label}: entry '{member.name}' is a link or special file; upload "
                                    "regular files only")
            if name in self._tar_members:
                raise InvalidUpload(f"{self.label}: entry '{name}' appears twice")
            self._tar_members[name] = member
            names.append(name)
        return names

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        if self._tar is not None:
            self._tar.close()

    def __enter__(self) -> "FolderArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def open(self, name: str, cap: int | None = None) -> Iterator:
        member = self.files[name]
        if self._zip is not None:
            with self._zip.open(member, cap) as reader:
                yield reader
            return
        info = self._tar_members[member]
        cap = self.limits.max_member_bytes if cap is None else min(cap, self.limits.max_member_bytes)
        if info.size > cap:
            raise InvalidUpload(f"{self.label}: entry '{member}' is {info.size} bytes, over the limit of {cap}")
        self._total += info.size
        if self._total > self.limits.max_total_bytes:
            raise InvalidUpload(f"{self.label}: entry '{member}' takes the archive past "
                                f"{self.limits.max_total_bytes} bytes, the limit")
        yield _TarReader(self._tar.extractfile(info), info.size, f"{self.label}: entry '{member}'")

    def read(self, name: str, cap: int) -> bytes:
        data = bytearray()
        with self.open(name, cap) as member:
            while chunk := member.read(CHUNK_BYTES):
                data += chunk
        return bytes(data)

    def count(self, name: str) -> int:
        """Read file `name` through under the caps (a zip member's CRC is checked); returns its real size."""
        size = 0
        with self.open(name) as member:
            while chunk := member.read(CHUNK_BYTES):
                size += len(chunk)
        return size

    def copy_to(self, name: str, destination: Path) -> int:
        """Write file `name` to `destination`; returns its size."""
        size = 0
        with self.open(name) as member, open(destination, "wb") as out:
            while chunk := member.read(CHUNK_BYTES):
                out.write(chunk)
                size += len(chunk)
        return size


class _TarReader:
    def __init__(self, raw: BinaryIO, size: int, where: str):
        self._raw, self.expected, self.where, self.size = raw, size, where, 0

    def read(self, size: int = -1) -> bytes:
        wanted = CHUNK_BYTES if size is None or size < 0 else min(size, CHUNK_BYTES)
        try:
            data = self._raw.read(wanted)
        except (tarfile.TarError, OSError) as exc:
            raise InvalidUpload(f"{self.where} is truncated ({exc}); upload the file again") from None
        self.size += len(data)
        if not data and self.size < self.expected:
            raise InvalidUpload(f"{self.where} is truncated; upload the file again")
        return data

    def read_exactly(self, size: int) -> bytes:
        parts, left = [], size
        while left > 0 and (chunk := self.read(left)):
            parts.append(chunk)
            left -= len(chunk)
        return b"".join(parts)


def _walk_tar_headers(source: BinaryIO, limits: ArchiveLimits, label: str) -> None:
    """Count entries and cap metadata headers from the raw 512-byte headers, before tarfile reads any."""
    source.seek(0)
    offset, entries = 0, 0
    while True:
        source.seek(offset)
        header = source.read(_BLOCK)
        if len(header) < _BLOCK or header == b"\x00" * _BLOCK:
            return
        try:
            size = int(header[124:136].rstrip(b"\x00 ").strip() or b"0", 8)
        except ValueError:
            raise InvalidUpload(f"{label}: a tar header has an unreadable size; is it a damaged tar?") from None
        kind = header[156:157]
        if kind in _METADATA_TYPES and size > limits.max_metadata_bytes:
            raise InvalidUpload(f"{label}: a tar metadata header claims {size} bytes; the limit is "
                                f"{limits.max_metadata_bytes}")
        if kind not in _METADATA_TYPES | _FILE_TYPES | _DIRECTORY_TYPES:
            raise InvalidUpload(f"{label}: the tar holds a link or special file (type {kind!r}); upload regular "
                                "files only")
        entries += 1
        if entries > limits.max_entries:
            raise InvalidUpload(f"{label}: more than {limits.max_entries} entries, the limit")
        offset += _BLOCK + (size + _BLOCK - 1) // _BLOCK * _BLOCK


def _strip_top_folder(names: list[str], label: str) -> dict[str, str]:
    """Name -> member. `folder/config.json` ... (one top-level folder around everything) reads as `config.json`."""
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1 and all("/" in name for name in names):
        top = tops.pop() + "/"
        return {name[len(top):]: name for name in names}
    return {name: name for name in names}
