"""Programs (`.pt2`) are written as deflated zips.

`torch.export.save` stores every member uncompressed. The program's JSON description (the graph) compresses about
10x, and int8 weights, most of them near zero, by about a quarter: CREPE's int8 `.pt2` goes from 619 to 385 kB,
PESTO's from 128 to 43 kB (its graph is most of the file). `torch.export.load` and the checked loader
(`compression.archive`) both read deflated members. Level 1: the same size within 3 % as level 6 at a quarter of
the time (about 40 MB/s on float weights).

A stage's `compression_ratio` compares its file with the upload as uploaded; an upload written by
`torch.export.save` is stored, so part of that ratio is deflate's, which the user could have had without us.
`deflated_size` gives the upload's size once deflated the same way, for the fair ratio
(`compression_ratio_vs_deflated_upload`).
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import BinaryIO

LEVEL = 1
_CHUNK = 1 << 20
_ZIP64_FROM = 1 << 31  # a member this large needs zip64 headers, which must be asked for before writing it


def deflate_zip(source: str | Path | BinaryIO, destination: str | Path | BinaryIO) -> None:
    """Copy the zip `source` to `destination` with every member deflated, streaming (never a whole member in
    memory), keeping member names and order."""
    with zipfile.ZipFile(source) as reader, zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED,
                                                            compresslevel=LEVEL) as writer:
        for info in reader.infolist():
            member = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            member.compress_type = zipfile.ZIP_DEFLATED
            with reader.open(info) as data, writer.open(member, "w", force_zip64=info.file_size >= _ZIP64_FROM) as out:
                shutil.copyfileobj(data, out, _CHUNK)


class _CountingSink:
    """A write-only, seekable-enough file that only counts what zipfile writes to it."""

    def __init__(self):
        self.position = self.size = 0

    def write(self, data) -> int:
        self.position += len(data)
        self.size = max(self.size, self.position)
        return len(data)

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = {0: 0, 1: self.position, 2: self.size}[whence] + offset
        return self.position

    def flush(self) -> None:
        pass


def deflated_size(path: str | Path) -> int:
    """Bytes of the zip at `path` once every member is deflated as `deflate_zip` does (its own size when every
    member already is)."""
    with zipfile.ZipFile(path) as reader:
        if all(info.compress_type == zipfile.ZIP_DEFLATED for info in reader.infolist()):
            return Path(path).stat().st_size
    sink = _CountingSink()
    deflate_zip(path, sink)
    return sink.size
