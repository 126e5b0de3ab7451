"""The sandboxed child as it sees itself: started like a job's, it reports identity, environment, reachable
services and files, and limits (worker.child.probe)."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from worker import spawner

AS_ROOT = os.geteuid() == 0
METHOD_MODULES = ["compression.pipeline", "compression.ptq.apply", "compression.qat.apply", "compression.distill.kd",
                  "compression.distill.function_matching", "compression.distill.quantized", "compression.pq.apply",
                  "compression.prune.apply", "worker.child_errors"]


@pytest.fixture
def listener():
    """A port this process can reach: the child must not (the database and broker ports are checked too)."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server.getsockname()[1]
    server.close()


def test_the_child_holds_no_credentials_and_reaches_no_service(settings, backend, listener, tmp_path):
    from worker.sandbox import probe
    socket.create_connection(("127.0.0.1", listener), timeout=2).close()  # reachable from here
    os.environ["MODELPRESS_SECRET_FOR_TEST"] = "hunter2"
    other_job = settings.model_copy(update={"sandbox_scratch_dir": tmp_path / "scratch"})
    other_file = tmp_path / "scratch" / "job_other-x" / "inputs" / "dataset.npz"
    other_file.parent.mkdir(parents=True)
    other_file.write_bytes(b"another tenant's data")
    database = settings.data_dir / "modelpress.db" if backend.name == "sqlite" else None
    try:
        run = probe(other_job, {"ports": [listener, 5432, 6379], "imports": METHOD_MODULES,
                                "paths": [p for p in (str(database), "/run/postgresql/.s.PGSQL.5432",
                                                      str(other_file)) if p != "None"]})
    finally:
        del os.environ["MODELPRESS_SECRET_FOR_TEST"]
    seen, report = run.probe, run.isolation
    assert seen is not None, run.output_tail
    # The job's process is a fork of the worker's zygote, which was never given anything secret either.
    zygote = spawner._zygote
    assert seen["parent"] == zygote.pid
    assert len(list(Path(f"/proc/{zygote.pid}/task").iterdir())) == 1  # a single thread: forks copy no held lock
    zygote_environ = Path(f"/proc/{zygote.pid}/environ").read_bytes().split(b"\0")
    assert not [entry for entry in zygote_environ if entry.startswith(b"MODELPRESS_") or b"hunter2" in entry]
    assert not [name for name in seen["environ"] if name.startswith("MODELPRESS_")]
    assert not [value for value in seen["environ"].values() if "hunter2" in value or "postgresql" in value
                or "redis://" in value or "sqlite" in value]
    assert seen["environ"]["HOME"].startswith(str(tmp_path / "scratch"))
    assert seen["forbidden_modules"] == []  # the method modules loaded, and pulled in no app, database or broker
    assert seen["no_new_privs"] and report["parent_death_signal"] is True
    limits = seen["limits"]
    assert limits["open_files"] == [settings.sandbox_max_open_files] * 2
    assert limits["file_bytes"] == [settings.sandbox_max_file_bytes] * 2
    assert limits["address_space"][0] == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # CPU default
    if not AS_ROOT:
        pytest.skip("namespaces and the user change need a worker running as root")
    assert report["network_namespace"] is True and report["mount_namespace"] is True and report["user"] is True
    assert (seen["uid"], seen["gid"], seen["groups"]) == (65534, 65534, [])
    assert all(result.endswith("Network is unreachable") for result in seen["ports"].values()), seen["ports"]
    assert all(result.startswith(("FileNotFoundError", "PermissionError")) for result in seen["paths"].values()), \
        seen["paths"]


@pytest.mark.one_backend
def test_two_tenants_never_share_a_compile_cache(settings):
    from worker.compile_cache import cache_root, kind_root, tenant_cache
    from worker.sandbox import probe
    from worker.scratch import sandbox_identity
    identity = sandbox_identity(settings)
    ours, theirs = (tenant_cache(settings, identity, tenant) for tenant in ("tenant-ours", "tenant-theirs"))
    assert ours != theirs and ours.parent == theirs.parent == kind_root(settings)
    assert kind_root(settings).parent == cache_root(settings)
    assert tenant_cache(settings, identity, "tenant-ours") == ours  # kept for the tenant's next job
    (theirs / "inductor").mkdir(exist_ok=True)
    kernel = theirs / "inductor" / "kernel.so"
    kernel.write_bytes(b"another tenant's compiled model")
    run = probe(settings, {"paths": [str(kernel), str(theirs)]}, tenant_id="tenant-ours")
    seen = run.probe
    assert seen is not None, run.output_tail
    assert seen["environ"]["TORCHINDUCTOR_CACHE_DIR"] == str(ours / "inductor")
    assert seen["environ"]["TRITON_CACHE_DIR"] == str(ours / "triton")
    if not AS_ROOT:
        pytest.skip("the mount namespace that hides other tenants' caches needs a worker running as root")
    assert all(result.startswith("FileNotFoundError") for result in seen["paths"].values()), seen["paths"]


@pytest.mark.one_backend
def test_torch_compile_and_its_compiler_processes_work_in_the_sandbox(settings):
    from worker.sandbox import probe
    run = probe(settings, {"compile": True}, timeout_s=300)
    assert run.probe is not None, run.output_tail
    assert run.probe["forbidden_modules"] == []
    if AS_ROOT:
        assert run.probe["uid"] == 65534 and run.isolation["mount_namespace"] is True


@pytest.mark.one_backend
def test_a_child_that_does_not_stop_when_asked_is_killed_after_the_grace_period(settings):
    from worker.sandbox import isolation_plan, run_child
    from worker.scratch import job_scratch, sandbox_identity
    quick = settings.model_copy(update={"sandbox_kill_grace_s": 1.0})
    identity = sandbox_identity(quick)
    started = time.monotonic()
    with job_scratch(quick, identity, "job_deaf") as scratch:
        plan = isolation_plan(quick, identity, scratch, "cpu", 60)
        run = run_child(quick, scratch, {"isolation": plan, "probe": {"hold_s": 120}}, lambda message: None,
                        lambda: "cancelled")
    assert run.killed and run.stop_reason == "cancelled" and run.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 30


@pytest.mark.one_backend
def test_the_child_dies_with_its_worker(backend, tmp_path):
    """The worker (here a small stand-in process) is killed hard; its job's process (forked by the worker's zygote,
    which dies with the worker) must not outlive it."""
    script = textwrap.dedent("""
        from core.config import get_settings
        from worker.sandbox import probe
        probe(get_settings(), {"hold_s": 300}, timeout_s=600)
    """)
    worker = subprocess.Popen([sys.executable, "-c", script],
                              env={**os.environ, "MODELPRESS_SANDBOX_SCRATCH_DIR": str(tmp_path)})
    try:
        child = _wait_for_child(worker.pid)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def _wait_for_child(worker: int, timeout: float = 60) -> int:
    """The job's process started for `worker`: a fork of its zygote, named `modelpress-job` (worker.zygote)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                named = (proc / "comm").read_text().strip() == "modelpress-job"
            except OSError:
                continue
            if named and worker in _ancestors(int(proc.name)):
                return int(proc.name)
        time.sleep(0.1)
    raise AssertionError("the stand-in worker never started a child")


def _ancestors(pid: int) -> list[int]:
    found = []
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            break
        found.append(pid)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
