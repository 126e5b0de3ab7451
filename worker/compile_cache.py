"""Compiler caches of the jobs: Inductor's precompiled C++ header, built once by the worker and lent read-only to
every job, and one compile cache per tenant, kept across that tenant's jobs and never seen by another tenant.

The first `torch.compile` on CPU precompiles Inductor's C++ prelude (about 150 MB; 45 s on two busy cores) into
`<temp dir>/torchinductor_<user>/precompiled_headers`. Each job's process has a temp dir of its own, so every job
that times compiled models would build it again. Instead the worker process builds it once, before its first job
(so that never competes with a job's timings), from a built-in model (no tenant input), and hard-links it into
each job's temp dir (when both are on one file system). The links stay owned by the worker and read-only,
so no job can alter what another job's compiler reads; a job that needs another variant builds it for itself.

Inductor's and Triton's caches (compiled kernels, FX graphs) are written by the jobs themselves, so they are
per tenant and per kind of CPU: `<data dir>/compile-cache/cpu-<cpu kind>/<sha256 of the tenant id>`, owned by the
sandbox user. The CPU kind (`cpu_kind`) is a digest of what decides the code Inductor and oneDNN generate: the CPU's
model and flags, the instruction-set caps a job is given (`ATEN_CPU_CAPABILITY`, `ONEDNN_MAX_CPU_ISA`) and torch's
version. Inductor's FX graph cache does not tell these apart, and graphs cached under an AVX2 cap crashed the next
uncapped job on an AVX-512 machine with heap corruption (the job lost): a data directory shared by hosts with
different CPUs, or a worker restarted with another cap, now starts separate caches instead. A job's mount
namespace hides the whole data directory and binds back only its own tenant's cache (`worker.sandbox`), so a
tenant's job can neither read another tenant's compiled models nor plant code another tenant's job would load.
A cache that outgrows `MAX_TENANT_CACHE_BYTES` is emptied before the tenant's next job.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:  # at run time nothing but the standard library and torch: the sandboxed child imports this too
    from core.config import Settings
    from worker.scratch import Identity

log = logging.getLogger(__name__)

# The user name a job's process gives torch (LOGNAME), which names its Inductor directory in its temp dir.
SANDBOX_LOGNAME = "modelpress-job"
MAX_TENANT_CACHE_BYTES = 2 * 1024**3
# Environment variables that cap the instruction sets torch's kernels and Inductor's code use (and so what a cached
# graph was compiled for). DNNL_ is oneDNN's older spelling.
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
CPUINFO_KEYS = ("vendor_id", "cpu family", "model", "model name", "flags", "isa", "cpu", "features")


def warm_up() -> None:
    """Compile a small built-in model so the precompiled header exists in this process's Inductor directory (also
    how a sandbox probe checks that torch.compile and its compiler processes work under the job's limits)."""
    import torch

    torch._inductor.config.compile_threads = 1  # no pool of compiler processes left in the worker
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 10)).eval()
    with torch.no_grad():
        torch.compile(model)(torch.randn(2, 1, 8, 8))


@functools.cache
def build_headers_once() -> bool:
    """`warm_up` in this worker process, once; False if it could not (jobs then build their own headers)."""
    try:
        warm_up()
        return True
    except Exception:
        log.exception("could not build Inductor's precompiled header for the jobs")
        return False


def _worker_headers() -> Path:
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    return Path(default_cache_dir()) / "precompiled_headers"


def lend_headers(scratch: Path, identity: Identity, source: Path | None = None) -> None:
    """Link the worker's precompiled headers (from `source`, default: this process's Inductor directory) where the
    job's compiler looks (its TMPDIR is scratch/tmp).

    Runs after the scratch directory was given to the sandbox user: the directories become the job's, the linked
    files stay the worker's."""
    source = source or _worker_headers()
    if not source.is_dir():
        return
    target = scratch / "tmp" / f"torchinductor_{SANDBOX_LOGNAME}" / "precompiled_headers"
    target.mkdir(parents=True)
    for directory in (target.parent, target):
        if identity.uid is not None:
            os.chown(directory, identity.uid, identity.gid)
    for header in source.iterdir():
        if header.suffix in (".h", ".gch") and header.is_file() and not header.is_symlink():
            try:
                os.link(header, target / header.name)
            except OSError as exc:  # e.g. another file system: copying 150 MB per job would cost more than it saves
                log.info("precompiled headers not lent to the job (%s); it builds its own", exc.strerror)
                return


def cache_root(settings: Settings) -> Path:
    root = (settings.data_dir / "compile-cache").resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o711)  # the sandbox user may pass through to its own tenant's directory, never list it
    return root


def cpu_kind(environment: Mapping[str, str], cpuinfo: str | None = None) -> str:
    """A short digest of what a compiled graph depends on besides the model: this machine's architecture, its
    first CPU's description in /proc/cpuinfo (model and flags), the instruction-set caps in `environment` (the
    jobs' environment) and torch's version."""
    import torch

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    first_cpu = cpuinfo.split("\n\n", 1)[0]
    described = sorted(line.split(":", 1)[0].strip() + "=" + " ".join(sorted(line.split(":", 1)[1].split()))
                       for line in first_cpu.splitlines()
                       if ":" in line and line.split(":", 1)[0].strip() in CPUINFO_KEYS)
    caps = [f"{name}={environment.get(name, '')}" for name in ISA_CAPS]
    text = "\n".join([platform.machine(), torch.__version__, *caps, *described])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def kind_root(settings: Settings) -> Path:
    """The compile caches of this kind of CPU (`cpu_kind` of the jobs' environment): a directory of the worker's,
    which the sandbox user may pass through but not list."""
    from worker.sandbox import base_environment

    path = cache_root(settings) / f"cpu-{cpu_kind(base_environment(settings))}"
    path.mkdir(exist_ok=True)
    os.chmod(path, 0o711)
    return path


def zygote_probe_dir(settings: Settings) -> str | None:
    """Where the zygote builds Inductor's instruction-set probes (worker.zygote.probe_vector_instructions): kept
    across worker starts (one per kind of CPU), entered only by the worker's user (the sandbox user cannot create
    or enter anything in the cache root). None if it is not a plain directory of ours: the zygote then uses a
    temporary one."""
    path = kind_root(settings) / "zygote"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return None
    if path.is_symlink() or not path.is_dir() or path.stat().st_uid != os.getuid():
        return None
    return str(path)


def tenant_cache(settings: Settings, identity: Identity, tenant_id: str) -> Path:
    """The tenant's compile cache directory, created for the sandbox user (emptied first when too large)."""
    path = kind_root(settings) / hashlib.sha256(tenant_id.encode()).hexdigest()
    if path.is_dir() and not path.is_symlink() and _tree_bytes(path) > MAX_TENANT_CACHE_BYTES:
        log.info("compile cache of tenant %s is over %d bytes; emptied", tenant_id, MAX_TENANT_CACHE_BYTES)
        shutil.rmtree(path, ignore_errors=True)  # fd-based: safe against links the sandbox user planted
    if not path.exists():
        path.mkdir(mode=0o700)
        if identity.uid is not None:
            os.chown(path, identity.uid, identity.gid)
    return path


def _tree_bytes(path: Path) -> int:
    total = 0
    for directory, _subdirectories, files in os.walk(path):  # does not follow symlinks
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total
