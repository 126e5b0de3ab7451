"""Decompressing a blob from a file the library reads (the graph inside the packed formats) without letting it
expand past a cap: both codecs stop at `max_length`, so a bomb costs at most the cap."""

from __future__ import annotations

import lzma
import zlib

from compression.archive.errors import InvalidUpload


def inflate(data: bytes, cap: int, where: str, codec: str = "zlib") -> bytes:
    """`data` decompressed with `codec` ("zlib" or "lzma"), refused if it is damaged or exceeds `cap` bytes."""
    decompressor = zlib.decompressobj() if codec == "zlib" else lzma.LZMADecompressor()
    try:
        out = decompressor.decompress(data, cap + 1)
    except (zlib.error, lzma.LZMAError) as exc:
        raise InvalidUpload(f"{where}: damaged {codec} data ({exc})") from None
    if len(out) > cap:
        raise InvalidUpload(f"{where}: expands past {cap} bytes, the limit")
    if not decompressor.eof:
        raise InvalidUpload(f"{where}: truncated {codec} data")
    return out
