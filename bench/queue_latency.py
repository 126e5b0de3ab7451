"""Submit-to-running latency: how long a job waits in `queued` when a worker is idle, over N jobs.

Each job is submitted to a live service (API + one idle worker), cancelled as soon as it runs (its process is
killed after MODELPRESS_SANDBOX_KILL_GRACE_S = 1 s) and waited for to the end before the next one, so the worker
is idle at every submission and fifty jobs take minutes, not the jobs' full run time. One more job goes first,
as soon as the API answers (the worker may still be starting), and is reported apart. The latency is the job's
`started_at` (its claim by the worker) minus its `created_at` (the API's insert), both stamped by the service.
Backends: the embedded default (SQLite + kombu's SQLAlchemy transport) at several poll intervals, and
PostgreSQL + Redis.

    nice .venv/bin/python -m bench.queue_latency --jobs 50
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.live_service import BackendChoice, choose_backends, live_service
from modelpress.client import Client

DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test_h6"
BROKER_URL = "redis://127.0.0.1:6379/6"
# A real job (PTQ of the small digits CNN); it is cancelled once running, so its size hardly matters.
SPEC = {"stages": [{"method": "ptq", "calibration_samples": 32}],
        "evaluation": {"max_samples": 64, "latency": False, "compile": False}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(backend: BackendChoice, jobs: int, poll_s: float | None, example: tuple[Path, Path]) -> dict:
    env = {"MODELPRESS_SANDBOX_KILL_GRACE_S": "1", "MODELPRESS_QUOTA_ACTIVE_JOBS": "1000",
           **({"MODELPRESS_EMBEDDED_BROKER_POLL_S": str(poll_s)} if poll_s else {})}
    with live_service(backend, env) as service:
        client = Client(service.base_url, service.api_key)
        model, dataset = client.upload_model(example[0]), client.upload_dataset(example[1])
        latencies = []
        for _ in range(jobs + 1):
            job = client.submit_job({"model_id": model.id, "dataset_id": dataset.id, **SPEC})
            while client.job(job["id"])["status"] == "queued":
                time.sleep(0.05)
            if client.job(job["id"])["status"] == "running":
                client.cancel(job["id"])
            done = client.wait(job["id"], timeout=300, poll=0.2)
            if done["started_at"] is None:
                raise SystemExit(f"job {done['id']} ended {done['status']} without starting: {done['error']}")
            started, created = (datetime.fromisoformat(done[key]) for key in ("started_at", "created_at"))
            latencies.append((started - created).total_seconds())
    # The first job is submitted as soon as the API answers, while the worker may still be starting: shown apart.
    first, latencies = latencies[0], latencies[1:]
    return {"backend": backend.name, "poll_s": poll_s, "jobs": jobs, "started": len(latencies),
            "first_job_s": first, "median_s": statistics.median(latencies), "p95_s": percentile(latencies, 0.95),
            "max_s": max(latencies), "latencies_s": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--embedded-polls", default="1.0,0.1", help="embedded broker poll intervals to compare "
                                                                     "(1.0 is kombu's default)")
    parser.add_argument("--database-url", default=DATABASE_URL)
    parser.add_argument("--broker-url", default=BROKER_URL)
    parser.add_argument("--json", type=Path, default=Path("bench/results/queue_latency.json"))
    args = parser.parse_args()
    from compression.examples import write_digits_example
    backends, skipped = choose_backends(args.backends.split(","), args.database_url, args.broker_url)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        example = write_digits_example(Path(tmp))
        for backend in backends:
            polls = [float(p) for p in args.embedded_polls.split(",")] if backend.name == "sqlite" else [None]
            for poll_s in polls:
                rows.append(measure(backend, args.jobs, poll_s, example))
    print("| backend | embedded poll (s) | jobs | started | submit-to-running median (s) | p95 (s) | max (s) | "
          "first job after start (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        poll = "" if row["poll_s"] is None else f"{row['poll_s']:g}"
        print(f"| {row['backend']} | {poll} | {row['jobs']} | {row['started']} | {row['median_s']:.3f} | "
              f"{row['p95_s']:.3f} | {row['max_s']:.3f} | {row['first_job_s']:.3f} |")
    for line in skipped:
        print(line)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
