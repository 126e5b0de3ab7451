"""The commands that run the service on this machine: up, api, worker, migrate, keys, demo. They import the server
packages (installed with `pip install "modelpress[server]"`) only when they run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _settings(data_dir: str | None = None):
    if data_dir:
        os.environ["MODELPRESS_DATA_DIR"] = str(Path(data_dir).resolve())
    from core.config import get_settings
    return get_settings()


def cmd_migrate(args) -> int:
    from core.db.migrate import upgrade
    from core.store import get_store
    settings = _settings(args.data_dir)
    get_store().ensure_ready()
    upgrade(settings.resolved_database_url)
    print(f"database at the latest schema: {settings.resolved_database_url.split('@')[-1]}")
    return 0


def _database(args):
    """A session scope on the service's database, at the latest schema (where the embedded default allows)."""
    from core.db.migrate import ensure_schema
    from core.db.session import get_engine, session_scope
    settings = _settings(args.data_dir)
    ensure_schema(get_engine(), settings.resolved_database_url, settings.should_auto_migrate)
    return session_scope()


def cmd_keys_create(args) -> int:
    from app.auth.service import create_key
    with _database(args) as session:
        key = create_key(session, args.tenant)
    print(key)
    return 0


def cmd_keys_list(args) -> int:
    from app.auth.service import list_keys
    with _database(args) as session:
        keys = list_keys(session, args.tenant)
    print(f"{'id':22} {'tenant':24} {'starts with':12} {'created':20} revoked")
    for key, tenant in keys:
        revoked = key.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if key.revoked_at else ""
        print(f"{key.id:22} {tenant[:24]:24} {key.prefix:12} {key.created_at:%Y-%m-%d %H:%M:%S}  {revoked}")
    return 0


def cmd_keys_revoke(args) -> int:
    from app.auth.service import revoke_key
    with _database(args) as session:
        key = revoke_key(session, args.key)
    if key is None:
        print(f"no key {args.key!r} (give a key id from `modelpress keys list`, or the key itself)", file=sys.stderr)
        return 3
    print(f"revoked {key.id} ({key.prefix}...) at {key.revoked_at:%Y-%m-%d %H:%M:%S} UTC")
    return 0


def cmd_api(args) -> int:
    import uvicorn
    settings = _settings(args.data_dir)
    workers = args.workers or settings.resolved_api_workers
    _share_request_metrics(settings.data_dir.resolve() / "prometheus")
    if workers > 1:
        # Bring the schema up to date (where allowed) once, before the worker processes race to do it.
        from core.db.migrate import ensure_schema
        from core.db.session import get_engine
        ensure_schema(get_engine(), settings.resolved_database_url, settings.should_auto_migrate)
        get_engine().dispose()
    # Admission control is ours (app/core/overload.py: 503 with Retry-After and our error shape), so uvicorn's
    # own limit_concurrency stays off; the listen backlog holds a burst of connections until they are accepted.
    # Idle keep-alive connections stay open longer than common proxies' 60 s, so a proxy never reuses a
    # connection we are closing at that moment (a reset instead of an answer).
    uvicorn.run("app.main:app", host=args.host, port=args.port, log_level="info", workers=workers,
                backlog=4096, timeout_keep_alive=65, access_log=settings.api_access_log)
    return 0


def _share_request_metrics(directory: Path) -> None:
    """Every uvicorn process writes its request counters here, so /metrics sums them whichever process answers.
    Emptied at start: counters of processes that no longer run would otherwise be counted forever."""
    import shutil
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def cmd_worker(args) -> int:
    settings = _settings(args.data_dir)
    from core.queue import QUEUES
    queues = args.queues.split(",") if args.queues else None
    if queues is None:
        from worker.capacity import detect_capacity
        queues = detect_capacity(settings).default_queues
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        print(f"unknown queue(s) {', '.join(unknown)}; the queues are {', '.join(QUEUES)}", file=sys.stderr)
        return 2
    from worker.tasks import celery
    celery.worker_main(["worker", "--queues", ",".join(queues), "--concurrency", str(args.concurrency), "--pool",
                        args.pool, "--loglevel", args.loglevel, "--hostname", args.name,
                        *(["--task-events"] if args.events else [])])
    return 0


def cmd_store_check(args) -> int:
    """Print the counts of store objects without rows and rows without objects; exit 1 unless all are 0."""
    import json

    from core.store.lifecycle import find_orphans, sweep
    settings = _settings(args.data_dir)
    orphans = sweep(settings) if args.sweep else find_orphans(args.min_age_s)
    print(json.dumps({"store": settings.resolved_store_url, **orphans.counts(),
                      "examples": {"objects": orphans.objects[:10], "rows": orphans.rows[:10],
                                   "unused": orphans.unused[:10]}}, indent=2))
    return 1 if any(orphans.counts().values()) else 0


def start_service(data_dir: Path, host: str, port: int, log_path: Path | None = None,
                  env: dict | None = None) -> list[subprocess.Popen]:
    """Start the API and one worker as child processes sharing `data_dir` (the embedded default)."""
    env = {**os.environ, **(env or {}), "MODELPRESS_DATA_DIR": str(data_dir.resolve())}
    output = open(log_path, "ab") if log_path else None
    base = [sys.executable, "-m", "modelpress.cli"]
    # Migrate once, before two processes race to do it.
    subprocess.run(base + ["migrate"], env=env, check=True, stdout=output or subprocess.DEVNULL)
    return [subprocess.Popen(base + ["api", "--host", host, "--port", str(port)], env=env, stdout=output,
                             stderr=subprocess.STDOUT),
            subprocess.Popen(base + ["worker"], env=env, stdout=output, stderr=subprocess.STDOUT)]


def stop_service(processes: list[subprocess.Popen], timeout: float = 20) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cmd_up(args) -> int:
    settings = _settings(args.data_dir)
    processes = start_service(settings.data_dir, args.host, args.port)
    print(f"modelpress API on http://{args.host}:{args.port} (docs at /docs), one worker; data in "
          f"{settings.data_dir.resolve()}. Ctrl-C stops both.")
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        print("a service process exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop_service(processes)


def cmd_demo(args) -> int:
    from modelpress.demo import run_demo
    return run_demo(args)
