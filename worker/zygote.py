"""A warm parent for jobs' processes: `python -I -m worker.zygote <control fd> <worker pid>`, started by
`worker.spawner`.

Starting a fresh Python for each job and importing torch, torchao and the compression library costs seconds per
job. The zygote imports them once, before any tenant data exists, then forks one process per job. Each fork becomes
exactly what `python -I -m worker.child` would be: its own session, the pipe ends the worker passed, the scrubbed
environment the worker chose for that job, and then `worker.child.main`, which isolates it (namespaces, limits,
unprivileged user, no_new_privs) before it reads any tenant file.

What keeps the forks apart: the zygote is an exec'd program with the same scrubbed environment as a job's
process (no credentials), it never receives a job's setup (only its environment, working directory and pipe
ends), and it never runs torch code, so a fork inherits no data, no OpenMP threads and no CUDA context. A job's
changes to its memory are its own copy and die with it.

Protocol (SOCK_SEQPACKET, one JSON object per packet):
- worker -> zygote: {"op": "start", "env": {...}, "cwd": path} with three fds (stdin, output, message pipe);
  answered by {"op": "started", "pid": n} or {"op": "refused", "error": text};
- worker -> zygote: {"op": "kill", "pid": n}: SIGKILL that job's process group (only while the zygote has not
  reaped it, so a recycled pid is never hit);
- zygote -> worker: {"op": "exited", "pid": n, "returncode": rc} (rc as subprocess reports it: -signal if killed).
End of the control socket means the worker is gone: every job's group is killed and the zygote exits.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import select
import signal
import socket
import sys
import tempfile
import traceback

# What a job imports anyway; loading it here is what a fork saves. Importing runs no tenant code and touches no
# tenant file (the zygote has none). Not `torch._inductor` compilation itself: that starts compiler processes.
PRELOAD = ("torch", "torchao", "pydantic", "numpy", "torch._dynamo", "torch._inductor.compile_fx",
           "torchao.quantization.pt2e.quantize_pt2e", "compression.pipeline", "compression.ptq.apply",
           "compression.qat.apply", "compression.distill.kd", "compression.distill.function_matching",
           "compression.distill.quantized", "compression.pq.apply", "compression.prune.apply", "compression.measure",
           "worker.child", "worker.child_errors")
REAP_INTERVAL_S = 0.05
CHANNEL_FD = 3  # where a job's process finds its message pipe (worker.child.main)
PR_SET_NAME = 15
ZYGOTE_NAME, JOB_NAME = b"modelpress-zygo", b"modelpress-job"  # `ps` names (at most 15 bytes)

_libc = ctypes.CDLL(None, use_errno=True)


def preload(probe_dir: str | None = None) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    probe_vector_instructions(probe_dir)


def probe_vector_instructions(probe_dir: str | None = None) -> None:
    """Find out once which vector instruction sets Inductor's C++ code may use, so no job pays for it.

    Inductor asks this (`valid_vec_isa_list`, cached per process) at a process's first CPU compile: it builds a
    probe library per instruction set and loads each in a fresh Python, 0.3-1 s apiece, 2-4 s per job on the
    shared 2-core machine. Forks inherit the answer. It runs the C++ compiler and short-lived Pythons on torch's
    own probe source, nothing of a tenant's, and leaves no thread behind. It builds in `probe_dir`, a directory
    only the worker's user can enter, kept across worker starts (building the probes takes 5-20 s, loading built
    ones a second), or else in a private temporary directory removed afterwards; never in a shared temp dir,
    which could hold a planted library. An empty answer (no working compiler here) is not kept: each job then asks
    again in its own environment."""
    import shutil

    from torch._inductor import cpu_vec_isa

    def forget() -> None:
        cpu_vec_isa.valid_vec_isa_list.cache_clear()
        answers = getattr(cpu_vec_isa.VecISA, "_VecISA__bool__impl", None)  # each set's own cached answer
        if hasattr(answers, "cache_clear"):
            answers.cache_clear()

    private = probe_dir or tempfile.mkdtemp(prefix="modelpress-zygote-")
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = private
    try:
        if not cpu_vec_isa.valid_vec_isa_list():
            forget()
    except Exception:  # a job finds out for itself, as it did before
        forget()
    finally:
        os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        if before is not None:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
        if probe_dir is None:
            shutil.rmtree(private, ignore_errors=True)


def serve(control: socket.socket) -> None:
    """Answer the worker's requests until it hangs up; then kill what is left of the jobs."""
    children: set[int] = set()
    try:
        while True:
            if select.select([control], [], [], REAP_INTERVAL_S)[0]:
                data, fds, _flags, _address = socket.recv_fds(control, 1 << 20, 3)
                if not data:
                    return
                _handle(json.loads(data), fds, control, children)
            for pid, returncode in _reap(children):
                control.send(json.dumps({"op": "exited", "pid": pid, "returncode": returncode}).encode())
    finally:
        for pid in children:
            _kill_group(pid)


def _handle(request: dict, fds: list[int], control: socket.socket, children: set[int]) -> None:
    if request["op"] == "kill":
        if request["pid"] in children:
            _kill_group(request["pid"])
        return
    try:
        if request["op"] != "start" or len(fds) != 3:
            raise ValueError(f"bad request {request.get('op')!r} with {len(fds)} fds")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _become_job_process(request, fds, control)  # never returns
        children.add(pid)
        reply = {"op": "started", "pid": pid}
    except (OSError, ValueError, KeyError) as exc:
        reply = {"op": "refused", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        for fd in fds:
            os.close(fd)
    control.send(json.dumps(reply).encode())


def _become_job_process(request: dict, fds: list[int], control: socket.socket) -> None:
    """In the fork: look like a freshly started `worker.child`, then run it; exit without returning."""
    code = 1
    try:
        control.close()
        os.setsid()  # its own group, which the worker kills as a whole (with Inductor's compiler processes)
        _libc.prctl(PR_SET_NAME, JOB_NAME, 0, 0, 0)
        stdin, output, channel = fds
        os.dup2(stdin, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.dup2(channel, CHANNEL_FD)
        os.closerange(CHANNEL_FD + 1, os.sysconf("SC_OPEN_MAX"))
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None  # read TMPDIR again: the job's own
        _refresh_import_time_paths()
        os.chdir(request["cwd"])
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as the interpreter sets it at start-up
        from worker.child import main
        code = main(CHANNEL_FD)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _refresh_import_time_paths() -> None:
    """Paths torch 2.13 computes when a module is imported, from the zygote's environment: point them at the
    job's TMPDIR, where `worker.compile_cache.lend_headers` put the worker's precompiled header. (Dynamo's package
    cache is also placed at import, but only written with `caching_precompile`, which jobs leave off.)"""
    codecache = sys.modules.get("torch._inductor.codecache")
    if codecache is not None:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
        codecache._HEADER_DIR = os.path.join(default_cache_dir(), "precompiled_headers")
        codecache._HEADER_LOCK_DIR = os.path.join(codecache._HEADER_DIR, "locks")


def _reap(children: set[int]) -> list[tuple[int, int]]:
    """Exited children, each after its whole group is killed (while the exited leader is still unreaped, its pid
    and group id cannot be reused, so the kill cannot hit another process)."""
    exited = []
    for pid in list(children):
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            continue
        _kill_group(pid)
        _, status = os.waitpid(pid, 0)
        children.discard(pid)
        exited.append((pid, os.waitstatus_to_exitcode(status)))
    return exited


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def main() -> int:
    control = socket.socket(fileno=int(sys.argv[1]))
    from worker.isolation import die_with_parent
    die_with_parent(int(sys.argv[2]))
    _libc.prctl(PR_SET_NAME, ZYGOTE_NAME, 0, 0, 0)
    preload(sys.argv[3] if len(sys.argv) > 3 else None)
    serve(control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
