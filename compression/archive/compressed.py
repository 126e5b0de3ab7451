"""An upload compressed as a whole (`tar czf model.tar.gz`, `.tar.xz`, `.tar.bz2`, a gzipped `.pt2` or `.jsonl`):
decompressed once, when it is uploaded, into the plain file that is then inspected, stored and read like any
upload (`compression.archive.folder` reads uncompressed tars only, member by member under its caps).

Decompression streams in chunks and stops at a cap (the upload limit of the file's kind), so a bomb costs at most
the cap in disk and one chunk in memory, and the worker never decompresses anything. zstd has no reader in
Python's standard library: such a file is refused with what to send instead.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from typing import BinaryIO

from compression.archive.errors import InvalidUpload

CHUNK_BYTES = 1024**2
# first bytes -> (name, the standard library's reader of a compressed file object)
CODECS = {b"\x1f\x8b": ("gzip", lambda file: gzip.GzipFile(fileobj=file, mode="rb")),
          b"BZh": ("bz2", bz2.BZ2File), b"\xfd7zXZ\x00": ("xz", lzma.LZMAFile)}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ExpandsPastLimit(InvalidUpload):
    """The decompressed file would be larger than the limit on uploads of its kind."""


def codec_of(head: bytes) -> str | None:
    """The compression a file's first bytes announce (gzip, bz2, xz), None for anything else; zstd is refused."""
    if head.startswith(ZSTD_MAGIC):
        raise InvalidUpload("this is a zstd-compressed file, which is not read; send the archive uncompressed "
                            "(.zip, .tar) or compressed with gzip or xz (tar czf / tar cJf)")
    return next((name for magic, (name, _) in CODECS.items() if head.startswith(magic)), None)


def decompress(source: BinaryIO, target: BinaryIO, cap: int) -> int:
    """Write `source` (a file `codec_of` recognises) decompressed into `target`; returns the decompressed size.
    Raises ExpandsPastLimit past `cap` bytes and InvalidUpload when the data is damaged or truncated (an error
    writing `target`, such as a full disk, is not the upload's and propagates as it is)."""
    source.seek(0)
    name = codec_of(source.read(8))
    source.seek(0)
    opener = next(opener for codec, opener in CODECS.values() if codec == name)
    size = 0
    with opener(source) as stream:
        while chunk := _read(stream, name):
            size += len(chunk)
            if size > cap:
                raise ExpandsPastLimit(f"the {name}-compressed file expands past {cap} bytes, the limit on uploads "
                                       "of this kind")
            target.write(chunk)
    if size == 0:
        raise InvalidUpload(f"the {name}-compressed file holds nothing")
    target.flush()
    target.seek(0)
    return size


def _read(stream: BinaryIO, name: str) -> bytes:
    try:
        return stream.read(CHUNK_BYTES)
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
        raise InvalidUpload(f"damaged or truncated {name} data ({exc}); compress the archive again") from None
