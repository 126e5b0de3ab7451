"""The pipe protocol between the worker and a job's sandboxed process: one JSON object per line.

child -> worker: ready (isolations applied), progress, checkpoint (a file in the scratch dir), log, result or
error, probe. worker -> child: setup (first line), stop (user cancel or time limit).

Standard library only: the child imports this before anything else. What the child sends is untrusted (a
malicious upload could control it), so the reader caps line length and the worker validates every field it uses.
"""

from __future__ import annotations

import json
from urllib.parse import quote

MAX_LINE_BYTES = 16 * 1024**2


class ProtocolError(Exception):
    """The other side sent something that is not a message of this protocol."""


def checkpoint_file(name: str) -> str:
    """The file, in the scratch directory's checkpoints/, of the checkpoint `name` (e.g. "0:qat/train")."""
    file_name = quote(name, safe="")
    if file_name in ("", ".", ".."):
        raise ProtocolError(f"{name!r} cannot name a checkpoint")
    return file_name


def encode(kind: str, **fields) -> bytes:
    return json.dumps({"type": kind, **fields}, default=str).encode() + b"\n"


def decode(line: bytes) -> dict:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolError("a message must be a JSON object with a string 'type'")
    return message


class LineReader:
    """Splits bytes read from a pipe into messages, refusing lines longer than `max_bytes`."""

    def __init__(self, max_bytes: int = MAX_LINE_BYTES):
        self.max_bytes = max_bytes
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict]:
        self._buffer += data
        *lines, rest = self._buffer.split(b"\n")
        if len(rest) > self.max_bytes or any(len(line) > self.max_bytes for line in lines):
            raise ProtocolError(f"a message longer than {self.max_bytes} bytes")
        self._buffer = bytearray(rest)
        return [decode(line) for line in lines if line.strip()]
