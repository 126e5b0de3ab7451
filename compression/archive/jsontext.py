"""JSON from an upload: size-capped before parsing, depth-capped after, and of the type the reader expects."""

from __future__ import annotations

import json

from compression.archive.errors import InvalidUpload
from compression.archive.limits import ArchiveLimits

_TYPE_NAMES = {dict: "a JSON object", list: "a JSON list", str: "a JSON string"}


def parse_json(data: bytes | bytearray | str, where: str, limits: ArchiveLimits, expect: type = dict):
    """`data` parsed as JSON, which must be an `expect` nested at most `limits.max_json_depth` deep."""
    if len(data) > limits.max_metadata_bytes:
        raise InvalidUpload(f"{where} is {len(data)} bytes of JSON; the limit is {limits.max_metadata_bytes}")
    try:
        value = json.loads(data)
    except RecursionError:
        raise InvalidUpload(f"{where} nests JSON too deeply to parse") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidUpload(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(value, expect):
        raise InvalidUpload(f"{where} must hold {_TYPE_NAMES.get(expect, expect.__name__)}, "
                            f"not {type(value).__name__}")
    check_depth(value, where, limits.max_json_depth)
    return value


def check_depth(value, where: str, max_depth: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise InvalidUpload(f"{where} nests JSON deeper than {max_depth} levels")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
