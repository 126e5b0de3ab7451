"""Scale-out on PostgreSQL + Redis: one API, three worker processes, fifty jobs, one worker killed mid-job.

Prints the outcome: every job succeeded, each was claimed once (attempts = 1) except the killed worker's job
(claimed twice: by the killed worker and by the one that finished it), how the jobs spread over the workers, and
what the broker still holds afterwards. The database and Redis database given are wiped first.

    nice .venv/bin/python -m bench.scale_out --jobs 50
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.live_service import ROOT, choose_backends, live_service, service_env
from modelpress.client import Client

DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test_h6"
BROKER_URL = "redis://127.0.0.1:6379/6"
# A dead worker's job is re-queued after this long without heartbeat (the default is 60 s).
RECOVERY = {"MODELPRESS_STALE_AFTER_S": "4", "MODELPRESS_HEARTBEAT_INTERVAL_S": "0.5",
            "MODELPRESS_QUOTA_ACTIVE_JOBS": "1000"}  # fifty at once, from one tenant
JOB = {"stages": [{"method": "ptq", "calibration_samples": 32}],
       "evaluation": {"max_samples": 64, "latency": False, "compile": False}}


def job_rows(database_url: str) -> dict[str, dict]:
    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, status, attempts, worker FROM jobs")).mappings().all()
    engine.dispose()
    return {row["id"]: dict(row) for row in rows}


def queue_depths(env: dict[str, str]) -> dict:
    probe = "import json; from core.broker import queue_depths; print(json.dumps(queue_depths()))"
    found = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env}, capture_output=True,
                           text=True, check=True, cwd=ROOT)
    return json.loads(found.stdout.strip().splitlines()[-1])


def run(jobs: int, database_url: str, broker_url: str, example: tuple[Path, Path], tmp: Path) -> dict:
    backends, skipped = choose_backends(["postgres"], database_url, broker_url)
    if not backends:
        raise SystemExit(skipped[0])
    env = {**RECOVERY, "MODELPRESS_SANDBOX_SCRATCH_DIR": str(tmp / "scratch")}
    with live_service(backends[0], env) as service:
        worker_env = {**os.environ, **service_env(backends[0], env), "MODELPRESS_DATA_DIR": str(tmp / "data")}
        extra = [subprocess.Popen([sys.executable, "-m", "modelpress.cli", "worker", "--name", f"extra{i}@%h"],
                                  env=worker_env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                  start_new_session=True) for i in range(2)]
        try:
            client = Client(service.base_url, service.api_key)
            model, dataset = client.upload_model(example[0]), client.upload_dataset(example[1])
            started = time.monotonic()
            ids = [client.submit_job({"model_id": model.id, "dataset_id": dataset.id, **JOB})["id"]
                   for _ in range(jobs)]
            killed = kill_a_busy_extra_worker(extra, database_url, set(ids))
            finished = [client.wait(job_id, timeout=1800, poll=0.5) for job_id in ids]
            wall_s = time.monotonic() - started
            depths = queue_depths(service_env(backends[0], env))
        finally:
            for process in extra:
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait(60)
    rows = job_rows(database_url)
    return {"jobs": jobs, "wall_s": wall_s, "statuses": collections.Counter(j["status"] for j in finished),
            "attempts": collections.Counter(rows[i]["attempts"] for i in ids),
            "by_worker": collections.Counter(rows[i]["worker"] for i in ids), "killed": killed,
            "killed_job_final_worker": rows[killed["job"]]["worker"] if killed else None,
            "killed_job_attempts": rows[killed["job"]]["attempts"] if killed else None, "queue_depths": depths}


def kill_a_busy_extra_worker(extra: list[subprocess.Popen], database_url: str, ids: set[str]) -> dict | None:
    """SIGKILL (with its pool and the job's process) the first extra worker seen running one of our jobs."""
    pids = {process.pid: process for process in extra}
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for job_id, row in job_rows(database_url).items():
            if job_id in ids and row["status"] == "running" and row["worker"]:
                pid = int(row["worker"].rsplit(":", 1)[1])
                if pid in pids:
                    os.killpg(pid, signal.SIGKILL)
                    pids[pid].wait()
                    return {"job": job_id, "worker": row["worker"]}
        time.sleep(0.2)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--database-url", default=DATABASE_URL)
    parser.add_argument("--broker-url", default=BROKER_URL)
    parser.add_argument("--json", type=Path, default=Path("bench/results/scale_out.json"))
    args = parser.parse_args()
    from compression.examples import write_digits_example
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.jobs, args.database_url, args.broker_url, write_digits_example(Path(tmp)), Path(tmp))
    killed = result["killed"]
    print("| figure | value |")
    print("|---|---|")
    print(f"| jobs submitted | {result['jobs']} |")
    print(f"| final statuses | {dict(result['statuses'])} |")
    print(f"| claims per job (attempts: jobs) | {dict(sorted(result['attempts'].items()))} |")
    print(f"| killed mid-job | {killed['worker'] + ' running ' + killed['job'] if killed else 'none seen'} |")
    if killed:
        print(f"| that job: attempts, finished by | {result['killed_job_attempts']}, "
              f"{result['killed_job_final_worker']} |")
    for worker, count in sorted(result["by_worker"].items()):
        print(f"| jobs finished by {worker} | {count} |")
    print(f"| messages left in the queues | {result['queue_depths']} |")
    print(f"| wall time, submit to last job finished | {result['wall_s']:.0f} s |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**result, "statuses": dict(result["statuses"]),
                                     "attempts": dict(result["attempts"]),
                                     "by_worker": dict(result["by_worker"])}, indent=2))


if __name__ == "__main__":
    main()
