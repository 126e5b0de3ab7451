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
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from core.config import Settings
from worker.compile_cache import SANDBOX_LOGNAME, lend_headers
from worker.messages import LineReader, ProtocolError, encode
from worker.scratch import Identity, job_scratch, sandbox_identity, scratch_root

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


def child_environment(settings: Settings, scratch: Path) -> dict[str, str]:
    names = PASSED_ENV + tuple(settings.sandbox_pass_env)
    env = {name: os.environ[name] for name in names if name in os.environ and not name.startswith("MODELPRESS_")}
    env.setdefault("PATH", DEFAULT_PATH)
    cache = scratch / "cache"
    return env | {"HOME": str(scratch / "home"), "TMPDIR": str(scratch / "tmp"),
                  "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"), "TRITON_CACHE_DIR": str(cache / "triton"),
                  "LOGNAME": SANDBOX_LOGNAME, "PYTHONDONTWRITEBYTECODE": "1"}


def runtime_paths() -> list[str]:
    """What the child must be able to read: the Python installation, the virtualenv and our packages."""
    import compression
    import worker
    packages = {str(Path(package.__file__).resolve().parents[1]) for package in (compression, worker)}
    return sorted({sys.base_prefix, sys.prefix, sys.base_exec_prefix, sys.exec_prefix} | packages)


def isolation_plan(settings: Settings, identity: Identity, scratch: Path, device: str,
                   time_limit_s: float) -> dict:
    """What `worker.isolation.apply` does in the child (JSON)."""
    hidden = [*HIDDEN_SYSTEM_PATHS, str(settings.data_dir.resolve()), str(scratch_root(settings))]
    if Path(".env").is_file():  # settings may be read from it (core.config)
        hidden.append(str(Path(".env").resolve()))
    return {"parent_pid": os.getpid(), "scratch": str(scratch), "uid": identity.uid, "gid": identity.gid,
            "user_skipped": identity.reason, "hide": hidden, "keep": [*runtime_paths(), str(scratch)],
            "limits": limits(settings, device, time_limit_s)}


def limits(settings: Settings, device: str, time_limit_s: float) -> dict:
    memory = settings.sandbox_memory_bytes
    if memory is None and device == "cpu":
        # The machine's memory; none by default on a GPU, where CUDA reserves far more address space than it uses.
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cpu = settings.sandbox_cpu_seconds or int(time_limit_s * (os.cpu_count() or 1)) + 60
    return {"address_space": memory, "cpu_seconds": cpu, "open_files": settings.sandbox_max_open_files,
            "file_bytes": settings.sandbox_max_file_bytes}


def run_child(settings: Settings, scratch: Path, setup: dict, on_message: Callable[[dict], None],
              should_stop: Callable[[], str | None]) -> ChildExit:
    """Start the child with `setup` ({"isolation": plan, "task": ...} or {"isolation": plan, "probe": ...}) and
    supervise it until it exits; never leaves a process of it behind."""
    outcome = ChildExit(limits=setup["isolation"]["limits"])
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as output:  # unnamed: the child cannot swap it for something else
        try:
            process = subprocess.Popen([sys.executable, "-I", "-m", "worker.child", str(write_fd)],
                                       stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT,
                                       env=child_environment(settings, scratch), cwd=scratch, close_fds=True,
                                       pass_fds=(write_fd,), start_new_session=True)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        try:
            _send(process, encode("setup", **setup))
            _supervise(process, read_fd, outcome, on_message, should_stop, settings.sandbox_kill_grace_s)
            if not outcome.protocol_error:
                try:
                    process.wait(EXIT_WAIT_S)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            _kill_group(process)
            outcome.returncode = process.wait()
            os.close(read_fd)
            process.stdin.close()
            output.seek(max(0, output.seek(0, os.SEEK_END) - OUTPUT_TAIL_CHARS))
            outcome.output_tail = output.read().decode(errors="replace")
    return outcome


def probe(settings: Settings, request: dict | None = None, timeout_s: float = 120) -> ChildExit:
    """Start a child as a job's would be started, isolate it, and let it report what it sees (worker.child.probe)."""
    identity = sandbox_identity(settings)
    deadline = time.monotonic() + timeout_s
    with job_scratch(settings, identity, "probe") as scratch:
        lend_headers(scratch, identity)
        plan = isolation_plan(settings, identity, scratch, "cpu", timeout_s)
        return run_child(settings, scratch, {"isolation": plan, "probe": request or {}}, lambda message: None,
                         lambda: "time_limit_exceeded" if time.monotonic() > deadline else None)


def _supervise(process: subprocess.Popen, read_fd: int, outcome: ChildExit, on_message, should_stop,
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
            _kill_group(process)
            outcome.killed = True


def _dispatch(message: dict, outcome: ChildExit, on_message) -> None:
    kind = message["type"]
    if kind == "ready":
        outcome.isolation = message.get("isolation")
    elif kind in ("result", "error", "probe"):
        setattr(outcome, kind, message)
    else:
        on_message(message)


def _send(process: subprocess.Popen, line: bytes) -> None:
    try:
        process.stdin.write(line)
        process.stdin.flush()
    except (BrokenPipeError, OSError):  # the child is gone; its exit status tells why
        pass


def _kill_group(process: subprocess.Popen) -> None:
    """The child leads its own process group; its helpers (e.g. Inductor's compiler processes) are in it too."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
