"""How a job's process reports the exception that ended it: a code and a message for the user.

Runs in the sandboxed child (standard library and `compression` only). The worker turns the code into the job's
error (`worker.outcome.outcome_from_child`), adding what only it knows, such as the settings behind each limit.
"""

from __future__ import annotations

import errno
import traceback

from compression.context import Cancelled

# Substrings of the errors torch, the C++ runtime, the dynamic loader and Python's threads (whose stacks are
# allocations too) raise when an allocation fails.
MEMORY_MARKERS = ("can't allocate memory", "not enough memory", "bad_alloc", "out of memory",
                  "cannot allocate memory", "failed to map segment", "can't start new thread")
# Spec fields that scale memory use: named in an out-of-memory message so the user knows what to lower.
SIZE_FIELDS = ("batch_size", "samples")
TRACEBACK_CHARS = 4000


def describe(exc: BaseException, where: dict, stages: list[dict], evaluation: dict,
             file_limit_hit: bool = False) -> dict:
    """`where` is the last progress event's {"stage": "0:qat", "phase": "train"}; `stages` and `evaluation` are
    the job's spec (JSON), to name the sizes in use when memory ran out. `file_limit_hit`: a file the job wrote
    reached the file-size limit (writers such as torch's zip writer hide the EFBIG behind their own error)."""
    if isinstance(exc, Cancelled):
        return {"code": exc.reason, "message": f"stopped: {exc.reason}"}
    if _is_memory_error(exc):
        gpu = type(exc).__name__ == "OutOfMemoryError" and "CUDA" in str(exc)
        sizes = ", ".join(f"{name}={value}" for name, value in _sizes(where, stages, evaluation).items())
        return {"code": "out_of_memory", "gpu": gpu, "sizes": bool(sizes),
                "message": f"ran out of {'GPU ' if gpu else ''}memory in {_place(where)}"
                           + (f" with {sizes}; lower these" if sizes else "")}
    os_error = _os_error(exc)
    if file_limit_hit or (os_error is not None and os_error.errno in (errno.EFBIG, errno.EMFILE)):
        limit = "open_files" if os_error is not None and os_error.errno == errno.EMFILE else "file_bytes"
        return {"code": "resource_limit", "limit": limit, "message": f"{_place(where)} failed: {os_error or exc}"}
    if isinstance(exc, ValueError):  # the library's way of saying the inputs or spec cannot work
        # The traceback goes to the job's log only (the worker removes server paths): it shows the user where
        # in the method their input broke it.
        return {"code": "invalid_input", "message": str(exc),
                "traceback": "".join(traceback.format_exception(exc))[-TRACEBACK_CHARS:]}
    tail = "".join(traceback.format_exception(exc))[-TRACEBACK_CHARS:]
    return {"code": "internal_error", "message": f"{type(exc).__name__}: {exc} in {_place(where)}\n{tail}"}


def _place(where: dict) -> str:
    stage = where.get("stage")
    if not stage or stage == "main":
        return f"the job's {where.get('phase') or 'start'} phase"
    return f"stage {stage} ({where.get('phase')})"


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_memory_error(exc: BaseException) -> bool:
    return any(isinstance(e, MemoryError) or (isinstance(e, OSError) and e.errno == errno.ENOMEM)
               or (isinstance(e, (RuntimeError, ImportError)) and any(m in str(e).lower() for m in MEMORY_MARKERS))
               for e in _chain(exc))


def _os_error(exc: BaseException) -> OSError | None:
    return next((e for e in _chain(exc) if isinstance(e, OSError) and e.errno is not None), None)


def _sizes(where: dict, stages: list[dict], evaluation: dict) -> dict:
    stage = where.get("stage") or "main"
    if where.get("phase") == "start":
        return {}  # nothing was loaded yet: no size of the spec is to blame
    index = stage.split(":", 1)[0]
    if stage == "main" or where.get("phase") in ("evaluate", "latency") or not index.isdigit():
        return _size_fields(evaluation, "evaluation.")
    return _size_fields(stages[int(index)], f"stages.{index}.") if int(index) < len(stages) else {}


def _size_fields(spec: dict, prefix: str) -> dict:
    found = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            found |= _size_fields(value, f"{prefix}{key}.")
        elif any(field in key for field in SIZE_FIELDS):
            found[prefix + key] = value
    return found
