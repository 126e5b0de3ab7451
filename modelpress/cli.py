"""`modelpress` command line: run the service, manage keys and the schema, run the demo."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _settings(data_dir: str | None):
    if data_dir:
        os.environ["MODELPRESS_DATA_DIR"] = str(Path(data_dir).resolve())
    from core.config import get_settings
    return get_settings()


def cmd_migrate(args) -> int:
    from core.db.migrate import upgrade
    settings = _settings(args.data_dir)
    upgrade(settings.resolved_database_url)
    print(f"database at the latest schema: {settings.resolved_database_url.split('@')[-1]}")
    return 0


def cmd_keys_create(args) -> int:
    from app.auth.service import create_key
    from core.db.migrate import ensure_schema
    from core.db.session import get_engine, session_scope
    settings = _settings(args.data_dir)
    ensure_schema(get_engine(), settings.resolved_database_url, settings.should_auto_migrate)
    with session_scope() as session:
        key = create_key(session, args.tenant)
    print(key)
    return 0


def cmd_api(args) -> int:
    import uvicorn
    settings = _settings(args.data_dir)
    workers = args.workers or settings.resolved_api_workers
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
                        args.pool, "--loglevel", args.loglevel, "--hostname", args.name])
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelpress", description=__doc__)
    parser.add_argument("--data-dir", help="data directory of the embedded default (env MODELPRESS_DATA_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run the API and one worker on this machine")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--port", type=int, default=8000)
    up.set_defaults(func=cmd_up)

    api = commands.add_parser("api", help="run the HTTP API only")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=None, help="uvicorn worker processes (default: "
                                                               "MODELPRESS_API_WORKERS, else 2 on 2+ CPUs)")
    api.set_defaults(func=cmd_api)

    worker = commands.add_parser("worker", help="run one Celery worker (one per GPU)")
    worker.add_argument("--queues", help="comma-separated queues to consume: cpu, gpu or gpu,cpu (default: gpu,cpu "
                                        "on a GPU worker, cpu otherwise)")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--name", default="modelpress@%h", help="Celery node name; give each worker on one "
                                                                  "host its own (e.g. gpu0@%%h)")
    worker.set_defaults(func=cmd_worker)

    migrate = commands.add_parser("migrate", help="bring the database schema to the latest revision")
    migrate.set_defaults(func=cmd_migrate)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="keys_command", required=True)
    create = keys.add_parser("create", help="create an API key (prints it once)")
    create.add_argument("--tenant", required=True, help="tenant the key belongs to (created if new)")
    create.set_defaults(func=cmd_keys_create)

    demo = commands.add_parser("demo", help="end-to-end demo: int8 PTQ of a CNN trained on scikit-learn digits")
    demo.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    demo.add_argument("--no-compile", action="store_true", help="time models eagerly (quicker, no int8 speed-up)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
