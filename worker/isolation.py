"""Isolation a job's process applies to itself, first thing, before it imports torch or reads the upload.

The worker computes a plan (`worker.sandbox.isolation_plan`); this module carries it out and reports what it
could apply, each item either True or the reason it was skipped, so the worker can log it:

- dies with the worker (PR_SET_PDEATHSIG), so a killed worker never leaves a job running unsupervised;
- a new network namespace: no interface but a loopback that is down, so no database, broker or other host;
- a new mount namespace in which /run, /tmp, /var/tmp, /dev/shm, the data directory, the other jobs' scratch
  directories and the settings' .env file are empty (unix sockets such as PostgreSQL's live in /run), while the
  job's own scratch dir and the Python installation stay reachable (also when they sit under a directory the
  sandbox user may not enter, such as /root);
- resource limits (address space, CPU seconds, open files, file size);
- an unprivileged user with no supplementary groups, and no_new_privs so no set-uid program gives root back.

Standard library only. Namespaces and the user change need root; without it they are reported as skipped.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import stat
from pathlib import Path

CLONE_NEWNS, CLONE_NEWNET = 0x00020000, 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
# Writable scratch areas some libraries use whatever TMPDIR says; small, so they cannot fill memory.
SHARED_TMP = ("/tmp", "/var/tmp", "/dev/shm")
LIMITS = {"address_space": resource.RLIMIT_AS, "cpu_seconds": resource.RLIMIT_CPU,
          "open_files": resource.RLIMIT_NOFILE, "file_bytes": resource.RLIMIT_FSIZE}
# RLIMIT_CPU: SIGXCPU at the soft limit (a clear cause of death), SIGKILL this much later.
CPU_HARD_MARGIN_S = 5

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = lambda value: value.encode() if value is not None else None  # noqa: E731
    _check(_libc.mount(encode(source), encode(target), encode(fstype), flags, encode(data)), f"mount {target}")


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the worker dies; exit now if it already has. The setting is cleared by a change
    of user, so this runs again after `drop_user`."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent_pid:
        os._exit(1)


def apply(plan: dict) -> dict:
    """Carry out `plan` (see `worker.sandbox.isolation_plan`); returns what was applied."""
    die_with_parent(plan["parent_pid"])
    report: dict = {"parent_death_signal": True}
    report["network_namespace"] = _unshare(CLONE_NEWNET)
    mount_namespace = _unshare(CLONE_NEWNS)
    if mount_namespace is True:
        mount_namespace = _hide(plan["hide"], plan["keep"], report)
    report["mount_namespace"] = mount_namespace
    report["limits"] = _set_limits(plan["limits"])
    report["user"] = _drop_user(plan, mount_namespace is True)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    report["no_new_privs"] = True
    die_with_parent(plan["parent_pid"])
    os.chdir(plan["scratch"])
    os.umask(0o077)
    return report


def _unshare(flag: int) -> bool | str:
    try:
        _check(_libc.unshare(flag), "unshare")
        return True
    except OSError as exc:
        return f"not available ({exc.strerror}; needs root or CAP_SYS_ADMIN)"


def _hide(hide: list[str], keep: list[str], report: dict) -> bool | str:
    """Cover each `hide` path with an empty tmpfs (a file with /dev/null), then bind every `keep` path under it
    back in place. Keep paths are opened before anything is covered, so they stay reachable through their fds."""
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing done here may reach the worker's namespace
        kept = {path: os.open(path, os.O_PATH) for path in keep if os.path.exists(path)}
        hidden = []
        for path in _outermost(hide + _closed_ancestors(list(kept))):
            if os.path.isdir(path):
                options = "mode=1777,size=64m" if path in SHARED_TMP else "mode=0755,size=1m"
                _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, options)
                for keep_path, fd in sorted(kept.items()):  # outer before inner
                    if keep_path.startswith(path.rstrip("/") + "/"):
                        os.makedirs(keep_path, mode=0o755, exist_ok=True)
                        _mount(f"/proc/self/fd/{fd}", keep_path, None, MS_BIND | MS_REC)
            else:
                _mount("/dev/null", path, None, MS_BIND)
            hidden.append(path)
        for fd in kept.values():
            os.close(fd)
        report["hidden"] = hidden
        return True
    except OSError as exc:
        return f"failed ({exc})"


def _outermost(paths: list[str]) -> list[str]:
    """Existing real paths, without those inside another one (covering the outer one hides them already)."""
    real = sorted({os.path.realpath(p) for p in paths if os.path.lexists(p)}, key=lambda p: (p.count("/"), p))
    chosen: list[str] = []
    for path in real:
        if not any(path == outer or path.startswith(outer.rstrip("/") + "/") for outer in chosen):
            chosen.append(path)
    return chosen


def _closed_ancestors(paths: list[str]) -> list[str]:
    """The outermost directory above each path that other users may not enter (e.g. /root, mode 0700)."""
    closed = []
    for path in paths:
        for ancestor in reversed(Path(path).parents):
            if not os.stat(ancestor).st_mode & stat.S_IXOTH:
                closed.append(str(ancestor))
                break
    return closed


def _set_limits(limits: dict) -> dict:
    applied = {}
    for name, value in limits.items():
        if value is None:
            continue
        hard = value + CPU_HARD_MARGIN_S if name == "cpu_seconds" else value
        try:
            resource.setrlimit(LIMITS[name], (value, hard))
            applied[name] = value
        except (ValueError, OSError) as exc:  # e.g. above the hard limit a non-root worker got
            applied[name] = f"failed ({exc})"
    return applied


def _drop_user(plan: dict, mounted: bool) -> bool | str:
    uid, gid = plan.get("uid"), plan.get("gid")
    if uid is None:
        return plan.get("user_skipped", "not asked")
    unreachable = [path for path in plan["keep"]
                   if os.path.exists(path) and os.stat(path).st_uid != uid and not _open_to_others(path)]
    if unreachable:
        how = "" if mounted else " (and no mount namespace to expose them)"
        return f"skipped: {', '.join(unreachable)} not readable by other users{how}; chmod -R o+rX them"
    try:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            return f"skipped: {exc.strerror} (the worker is not root)"
        raise
    return True


def _open_to_others(path: str) -> bool:
    """Whether a user other than the owner may reach `path` and list it (mode bits; ACLs are not read)."""
    mode = os.stat(path).st_mode
    if not mode & stat.S_IROTH or (stat.S_ISDIR(mode) and not mode & stat.S_IXOTH):
        return False
    return all(os.stat(ancestor).st_mode & stat.S_IXOTH for ancestor in Path(path).parents)
