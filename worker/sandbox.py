"""Starting a job's sandboxed process and supervising it: the worker's side of `worker.child`.

The child gets a scrubbed environment (a short allowlist; never a MODELPRESS_ variable, a database or broker
URL), no inherited file descriptors but its message pipe, its own session, and an isolation plan it applies to
itself before it reads the upload (`worker.isolation`). The worker relays stop requests (cancel, time limit),
hands progress, checkpoint and log messages to `on_message`, and kills the child's process group when it does
not stop within the grace period, or when the worker itself is done with it.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.config import Settings
from worker.compile_cache import SANDBOX_LOGNAME, cache_root, lend_headers, tenant_cache, zygote_probe_dir
from worker.messages import LineReader, ProtocolError, encode
from worker.scratch import Identity, job_scratch, sandbox_identity, scratch_root
from worker.spawner import JobProcess, start_job_process

log = logging.getLogger(__name__)

# Passed through from the worker's environment when set: locale, thread counts, which GPU, where CUDA's
# libraries are, how many compiler processes Inductor may start. Nothing here carries a secret.
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "TZ", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "TORCHINDUCTOR_COMPILE_THREADS")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
# Where a sandboxed process could find the service's data, credentials or other jobs (see worker.isolation).
HIDDEN_SYSTEM_PATHS = ("/run", "/tmp", "/var/tmp", "/dev/shm")
POLL_S = 0.2
# A child that has sent its last message is given this long to exit by itself before its group is killed.
EXIT_WAIT_S = 15
OUTPUT_TAIL_CHARS = 3000


@dataclass
class ChildExit:
    """How a run of the child ended and what it said."""

    returncode: int | None = None
    isolation: dict | None = None
    result: dict | None = None
    error: dict | None = None
    probe: dict | None = None
    stop_reason: str | None = None  # the stop request the worker sent, if any
    killed: bool = False  # the worker killed it: it did not stop within the grace period
    protocol_error: str | None = None
    output_tail: str = ""
    limits: dict = field(default_factory=dict)


def skipped_isolations(report: dict | None) -> dict:
    """The parts of an isolation report that were not applied, with why (worker.isolation.apply)."""
    if report is None:
        return {"all": "the job's process ended before isolating itself"}
    skipped = {name: value for name, value in report.items() if isinstance(value, str)}
    skipped |= {f"limits.{name}": value for name, value in report.get("limits", {}).items() if isinstance(value, str)}
    return skipped


def base_environment(settings: Settings) -> dict[str, str]:
    """The allowlisted part of a job's environment: also all the zygote ever gets (worker.zygote)."""
    names = PASSED_ENV + tuple(settings.sandbox_pass_env)
    env = {name: os.environ[name] for name in names if name in os.environ and not name.startswith("MODELPRESS_")}
    env.setdefault("PATH", DEFAULT_PATH)
    return env | {"HOME": "/nonexistent", "LOGNAME": SANDBOX_LOGNAME, "PYTHONDONTWRITEBYTECODE": "1"}


def child_environment(settings: Settings, scratch: Path, cache: Path | None = None) -> dict[str, str]:
    """A job's environment: HOME, TMPDIR and the compiler caches in its scratch dir, or the compiler caches in
    its tenant's `cache` dir (worker.compile_cache.tenant_cache)."""
    cache = cache or scratch / "cache"
    return base_environment(settings) | {
        "HOME": str(scratch / "home"), "TMPDIR": str(scratch / "tmp"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "TRITON_CACHE_DIR": str(cache / "triton")}


def runtime_paths() -> list[str]:
    """What the child must be able to read: the Python installation, the virtualenv and our packages."""
    import compression
    import worker
    packages = {str(Path(package.__file__).resolve().parents[1]) for package in (compression, worker)}
    return sorted({sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix} | packages)


def isolation_plan(settings: Settings, identity: Identity, scratch: Path, device: str,
                   time_limit_s: float, cache: Path | None = None) -> dict:
    """What `worker.isolation.apply` does in the child (JSON); `run_child` adds the parent whose death it must
    not outlive (the zygote). `cache`: the tenant's compile cache (worker.compile_cache.tenant_cache), the one
    directory outside its scratch dir the job may write."""
    hidden = [*HIDDEN_SYSTEM_PATHS, str(settings.data_dir.resolve()), str(scratch_root(settings)),
              str(cache_root(settings))]
    if Path(".env").is_file():  # settings may be read from it (core.config)
        hidden.append(str(Path(".env").resolve()))
    keep = [*runtime_paths(), str(scratch), *([str(cache)] if cache else [])]
    return {"scratch": str(scratch), "uid": identity.uid, "gid": identity.gid, "user_skipped": identity.reason,
            "hide": hidden, "keep": keep, "limits": limits(settings, device, time_limit_s)}


def limits(settings: Settings, device: str, time_limit_s: float) -> dict:
    memory = settings.sandbox_memory_bytes
    if memory is None and device == "cpu":
        # The machine's memory; none by default on a GPU, where CUDA reserves far more address space than it uses.
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cpu = settings.sandbox_cpu_seconds or int(time_limit_s * (os.cpu_count() or 1)) + 60
    return {"address_space": memory, "cpu_seconds": cpu, "open_files": settings.sandbox_max_open_files,
            "file_bytes": settings.sandbox_max_file_bytes}


def run_child(settings: Settings, scratch: Path, setup: dict, on_message: Callable[[dict], None],
              should_stop: Callable[[], str | None], cache: Path | None = None) -> ChildExit:
    """Start the child with `setup` ({"isolation": plan, "task": ...} or {"isolation": plan, "probe": ...}) and
    supervise it until it exits; never leaves a process of it behind."""
    outcome = ChildExit(limits=setup["isolation"]["limits"])
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as output:  # unnamed: the child cannot swap it for something else
        try:
            process = start_job_process(base_environment(settings), child_environment(settings, scratch, cache),
                                        str(scratch), output.fileno(), write_fd, zygote_probe_dir(settings))
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        # The job's process is the zygote's child: that is whose death it must not outlive.
        setup = {**setup, "isolation": {**setup["isolation"], "parent_pid": process.zygote.pid}}
        try:
            _send(process, encode("setup", **setup))
            _supervise(process, read_fd, outcome, on_message, should_stop, settings.sandbox_kill_grace_s)
            if not outcome.protocol_error:
                try:
                    process.wait(EXIT_WAIT_S)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            process.kill_group()
            outcome.returncode = process.wait()
            process.release()
            os.close(read_fd)
            process.stdin.close()
            output.seek(max(0, output.seek(0, os.SEEK_END) - OUTPUT_TAIL_CHARS))
            outcome.output_tail = output.read().decode(errors="replace")
    return outcome


def probe(settings: Settings, request: dict | None = None, timeout_s: float = 120,
          tenant_id: str | None = None) -> ChildExit:
    """Start a child as a job's would be started (for `tenant_id`: with that tenant's compile cache), isolate it,
    and let it report what it sees (worker.child.probe)."""
    identity = sandbox_identity(settings)
    deadline = time.monotonic() + timeout_s
    cache = tenant_cache(settings, identity, tenant_id) if tenant_id else None
    with job_scratch(settings, identity, "probe") as scratch:
        lend_headers(scratch, identity)
        plan = isolation_plan(settings, identity, scratch, "cpu", timeout_s, cache)
        return run_child(settings, scratch, {"isolation": plan, "probe": request or {}}, lambda message: None,
                         lambda: "time_limit_exceeded" if time.monotonic() > deadline else None, cache)


def _supervise(process: JobProcess, read_fd: int, outcome: ChildExit, on_message, should_stop,
               grace_s: float) -> None:
    reader, stop_deadline = LineReader(), None
    while True:
        if select.select([read_fd], [], [], POLL_S)[0]:
            data = os.read(read_fd, 1 << 16)
            if not data:
                return  # the child closed its end: it has exited (or is about to)
            try:
                messages = reader.feed(data)
            except ProtocolError as exc:
                outcome.protocol_error = str(exc)
                return
            for message in messages:
                _dispatch(message, outcome, on_message)
        elif process.poll() is not None:
            return
        if outcome.stop_reason is None:
            outcome.stop_reason = should_stop()
            if outcome.stop_reason:
                _send(process, encode("stop", reason=outcome.stop_reason))
                stop_deadline = time.monotonic() + grace_s
        elif not outcome.killed and time.monotonic() > stop_deadline:
            log.warning("job process %s did not stop within %.0f s of '%s'; killing it", process.pid, grace_s,
                        outcome.stop_reason)
            process.kill_group()
            outcome.killed = True


def _dispatch(message: dict, outcome: ChildExit, on_message) -> None:
    kind = message["type"]
    if kind == "ready":
        outcome.isolation = message.get("isolation")
    elif kind in ("result", "error", "probe"):
        setattr(outcome, kind, message)
    else:
        on_message(message)


def _send(process: JobProcess, line: bytes) -> None:
    try:
        process.stdin.write(line)
        process.stdin.flush()
    except (BrokenPipeError, OSError):  # the child is gone; its exit status tells why
        pass
