"""A job's scratch directory: what the worker puts in for the sandboxed process, and reads back from it safely.

Everything under it belongs to the sandbox user, who may replace any file with a symlink, a FIFO or a hard link
to someone else's file. The worker runs with more rights (root, database access), so it opens what the child
names one path component at a time without following symlinks, and accepts only plain files.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from core.config import Settings

# Subdirectories the child uses; HOME, TMPDIR and the compiler caches point inside so nothing is written elsewhere.
LAYOUT = ("inputs", "inputs/students", "checkpoints", "out", "home", "tmp", "cache")


class UnsafeOutput(Exception):
    """The child named something in its scratch directory that is not a plain file of its own."""


@dataclass(frozen=True)
class Identity:
    """Who the sandboxed process runs as; uid None: as the worker (with `reason`)."""

    uid: int | None
    gid: int | None
    reason: str | None = None


def sandbox_identity(settings: Settings) -> Identity:
    import pwd

    if os.geteuid() != 0:
        return Identity(None, None, "skipped: the worker does not run as root")
    if not settings.sandbox_user:
        return Identity(None, None, "skipped: MODELPRESS_SANDBOX_USER is empty")
    try:
        entry = pwd.getpwnam(settings.sandbox_user)
    except KeyError:
        return Identity(None, None, f"skipped: no user '{settings.sandbox_user}' on this machine")
    return Identity(entry.pw_uid, entry.pw_gid)


def scratch_root(settings: Settings) -> Path:
    root = Path(settings.sandbox_scratch_dir or Path(tempfile.gettempdir()) / "modelpress-scratch").resolve()
    root.mkdir(parents=True, exist_ok=True)
    # Others may pass through (a sandbox user without a mount namespace reaches its own dir) but not list it.
    os.chmod(root, 0o711)
    return root


@contextmanager
def job_scratch(settings: Settings, identity: Identity, job_id: str) -> Iterator[Path]:
    """A fresh directory for one run, owned by the sandbox user, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=scratch_root(settings)))
    try:
        for name in LAYOUT:
            (path / name).mkdir(mode=0o700)
        give_to(path, identity)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)  # fd-based on Linux: safe against symlinks the child planted


def old_scratch_dirs(settings: Settings, min_age_s: float) -> dict[str, list[Path]]:
    """Scratch directories older than `min_age_s`, by job id: a worker killed mid-job leaves its own behind."""
    found: dict[str, list[Path]] = {}
    now = time.time()
    for entry in scratch_root(settings).iterdir():
        if entry.is_dir() and not entry.is_symlink() and now - entry.lstat().st_mtime > min_age_s:
            found.setdefault(entry.name.rsplit("-", 1)[0], []).append(entry)
    return found


def give_to(path: Path, identity: Identity) -> None:
    """Hand `path` (and everything under it) to the sandbox user."""
    if identity.uid is None:
        return
    for directory, subdirectories, files in os.walk(path):
        for name in [directory, *(os.path.join(directory, n) for n in subdirectories + files)]:
            os.chown(name, identity.uid, identity.gid, follow_symlinks=False)


@contextmanager
def open_output(scratch: Path, relative: str) -> Iterator[BinaryIO]:
    """Open a file the child wrote, named relative to `scratch`, refusing symlinks anywhere on the way, and
    anything but a regular file with a single link."""
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or any(p in ("", ".", "..") for p in parts):
        raise UnsafeOutput(f"{relative!r} is not a path inside the scratch directory")
    directory = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = _open_at(part, os.O_RDONLY | os.O_DIRECTORY, directory, relative)
            os.close(directory)
            directory = inner
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        fd = _open_at(parts[-1], os.O_RDONLY | os.O_NONBLOCK, directory, relative)
    finally:
        os.close(directory)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        raise UnsafeOutput(f"{relative!r} is not a plain file")
    os.set_blocking(fd, True)
    with os.fdopen(fd, "rb") as file:
        yield file


def _open_at(name: str, flags: int, directory: int, relative: str) -> int:
    try:
        return os.open(name, flags | os.O_NOFOLLOW, dir_fd=directory)
    except OSError as exc:
        raise UnsafeOutput(f"cannot open {relative!r} in the scratch directory: {exc.strerror}") from None
