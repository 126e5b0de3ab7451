"""The worker's side of `worker.zygote`: one warm zygote per worker process, and a handle on each job's process
it forks (what `worker.sandbox` supervises, in the manner of `subprocess.Popen`).

A zygote found dead (killed, or started by a thread that has since ended: its parent-death signal follows the
thread that started it) is replaced by a fresh one on the next start.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import BinaryIO

WAIT_SLICE_S = 0.05


class ZygoteGone(Exception):
    """The zygote exited (its jobs' processes die with it: parent-death signal)."""


class Zygote:
    def __init__(self, env: dict[str, str], probe_dir: str | None = None):
        # numpy's OpenBLAS starts a thread pool when it is imported; the zygote must stay single-threaded, so that
        # no fork copies a lock some other thread held (jobs do their heavy arithmetic in torch, not numpy).
        env = {**env, "OPENBLAS_NUM_THREADS": "1"}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", "-m", "worker.zygote", str(theirs.fileno()), str(os.getpid()),
                 *([probe_dir] if probe_dir else [])],
                env=env, cwd="/", stdin=subprocess.DEVNULL, close_fds=True, pass_fds=(theirs.fileno(),),
                start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.socket = ours
        self.lock = threading.Lock()
        self.exits: dict[int, int] = {}
        self.gone = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return not self.gone and self.process.poll() is None

    def start(self, env: dict[str, str], cwd: str, stdin: int, output: int, channel: int) -> int:
        """Fork a job's process with these fds as its stdin, stdout+stderr and message pipe; returns its pid."""
        with self.lock:
            self._send({"op": "start", "env": env, "cwd": cwd}, [stdin, output, channel])
            while True:
                reply = self._receive(None)
                if reply["op"] == "started":
                    return reply["pid"]
                if reply["op"] == "refused":
                    raise OSError(f"the zygote could not start a job's process: {reply['error']}")

    def kill_group(self, pid: int) -> None:
        with self.lock:
            if pid not in self.exits and not self.gone:
                self._send({"op": "kill", "pid": pid}, [])

    def returncode(self, pid: int, timeout: float = 0) -> int | None:
        """The exit status of a job's process, waiting up to `timeout` s for it; None while it runs."""
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:  # released between short waits: other threads may start or kill their jobs meanwhile
                if pid in self.exits:
                    return self.exits[pid]
                remaining = deadline - time.monotonic()
                if remaining < 0:
                    return None
                self._receive(min(remaining, WAIT_SLICE_S))

    def forget(self, pid: int) -> None:
        with self.lock:
            self.exits.pop(pid, None)

    def close(self) -> None:
        self.socket.close()
        self.process.kill()
        self.process.wait()

    def _send(self, message: dict, fds: list[int]) -> None:
        try:
            socket.send_fds(self.socket, [json.dumps(message).encode()], fds)
        except OSError as exc:
            self.gone = True
            raise ZygoteGone(f"the zygote is gone ({exc})") from None

    def _receive(self, timeout: float | None) -> dict | None:
        if self.gone:
            raise ZygoteGone("the zygote is gone")
        if not select.select([self.socket], [], [], timeout)[0]:
            return None
        data = self.socket.recv(1 << 16)
        if not data:
            self.gone = True
            raise ZygoteGone("the zygote is gone")
        message = json.loads(data)
        if message["op"] == "exited":
            self.exits[message["pid"]] = message["returncode"]
        return message


class JobProcess:
    """A job's process forked by the zygote; what `worker.sandbox` needs of a `subprocess.Popen`."""

    def __init__(self, zygote: Zygote, pid: int, stdin: BinaryIO):
        self.zygote, self.pid, self.stdin = zygote, pid, stdin

    def poll(self) -> int | None:
        return self.wait(0, raise_timeout=False)

    def wait(self, timeout: float | None = None, raise_timeout: bool = True) -> int | None:
        try:
            returncode = self.zygote.returncode(self.pid, 1e9 if timeout is None else timeout)
        except ZygoteGone:
            return -signal.SIGKILL  # its parent-death signal killed it
        if returncode is None and raise_timeout:
            raise subprocess.TimeoutExpired(f"job process {self.pid}", timeout)
        return returncode

    def kill_group(self) -> None:
        try:
            self.zygote.kill_group(self.pid)
        except ZygoteGone:
            pass

    def release(self) -> None:
        self.zygote.forget(self.pid)


_zygote: Zygote | None = None
_zygote_lock = threading.Lock()


def zygote(env: dict[str, str], probe_dir: str | None = None) -> Zygote:
    """This process's zygote, started with `env` if there is none alive (`probe_dir`: where it builds Inductor's
    instruction-set probes, worker.compile_cache.zygote_probe_dir)."""
    global _zygote
    with _zygote_lock:
        if _zygote is None or not _zygote.alive():
            if _zygote is not None:
                _zygote.close()
            _zygote = Zygote(env, probe_dir)
        return _zygote


def start_job_process(zygote_env: dict[str, str], env: dict[str, str], cwd: str, output: int,
                      channel: int, probe_dir: str | None = None) -> JobProcess:
    """Fork a job's process from the zygote (one is started first if needed)."""
    read_end, write_end = os.pipe()
    try:
        warm = zygote(zygote_env, probe_dir)
        try:
            pid = warm.start(env, cwd, read_end, output, channel)
        except ZygoteGone:  # died since the check (e.g. its starting thread ended): once more with a fresh one
            pid = (warm := zygote(zygote_env, probe_dir)).start(env, cwd, read_end, output, channel)
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return JobProcess(warm, pid, os.fdopen(write_end, "wb"))


def _forget_after_fork() -> None:
    """A forked worker (Celery's pool) must start its own zygote, not talk over its parent's socket."""
    global _zygote, _zygote_lock
    if _zygote is not None:
        _zygote.socket.close()
    _zygote, _zygote_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)
