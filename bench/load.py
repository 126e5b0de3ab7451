"""Does the API hold load? Job submissions and status polls at rising concurrency, on each backend.

For each backend (the embedded default, and PostgreSQL + Redis when they answer) it starts the service itself
(API + one worker), creates a key, uploads the digits example, then:

- submits SUBMISSIONS cheap jobs at once (one client each) and compares the jobs the service holds afterwards
  with the 201s received (duplicates: jobs created whose client was not told so, e.g. after a timeout or a 5xx);
- polls `GET /v1/jobs/{id}` in closed loops of 10, 50, 100, 200 and 500 clients, then in an open loop at RATE
  requests per second (latency counted from each request's scheduled start), POLLS requests in all.

Prints a markdown table per backend and writes bench/results/load.json. Targets: no errors and no duplicates at
any level; poll p99 under 50 ms at 200 req/s on PostgreSQL.

    .venv/bin/python -m bench.load [--backends sqlite,postgres] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx

from bench.live_service import DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL, ROOT, choose_backends, live_service
from bench.loadgen import Call, closed_loop, open_loop
from core.config import Settings

CHEAP_EVALUATION = {"latency": False, "compile": False, "max_samples": 64}
TARGET_P99_MS = 50.0


def upload_example(base_url: str, headers: dict, directory: Path) -> dict:
    from compression.examples import write_digits_example
    model_path, dataset_path = write_digits_example(directory)
    with httpx.Client(base_url=base_url, headers=headers, timeout=120) as client:
        ids = {}
        for route, path in (("/v1/models", model_path), ("/v1/datasets", dataset_path)):
            response = client.post(route, files={"file": (path.name, path.read_bytes())})
            response.raise_for_status()
            ids[route] = response.json()["id"]
    return {"model_id": ids["/v1/models"], "dataset_id": ids["/v1/datasets"],
            "stages": [{"method": "ptq", "calibration_samples": 32}], "evaluation": CHEAP_EVALUATION}


def jobs_held(base_url: str, headers: dict) -> int:
    response = httpx.get(f"{base_url}/v1/jobs", params={"limit": 1}, headers=headers, timeout=60)
    response.raise_for_status()
    return response.json()["total"]


async def run_backend(service, args, example_dir: Path) -> list[dict]:
    headers = {"Authorization": f"Bearer {service.api_key}"}
    spec = upload_example(service.base_url, headers, example_dir)
    submit = Call("POST", "/v1/jobs", json.dumps(spec).encode())
    submitted = await closed_loop(f"submit x{args.submissions}", service.base_url, headers, lambda _: submit,
                                  args.submissions, args.submissions, args.timeout, keep_answers=True)
    created_ok = [json.loads(a.body)["id"] for a in submitted.answers if a.status == 201]
    rows = [{**submitted.summary(), "duplicates": jobs_held(service.base_url, headers) - len(created_ok)}]
    if not created_ok:
        raise SystemExit(f"{service.backend.name}: no job was created: {submitted.summary()}")
    polls = [Call("GET", f"/v1/jobs/{job_id}") for job_id in created_ok]

    def poll(index: int) -> Call:
        return polls[index % len(polls)]

    rate_total = int(args.rate * args.rate_seconds)
    per_level = max((args.polls - rate_total) // len(args.levels), 1)
    for level in args.levels:
        result = await closed_loop(f"poll x{level}", service.base_url, headers, poll, level, per_level,
                                   args.timeout)
        rows.append(result.summary())
    paced = await open_loop(f"poll @{args.rate:g}/s", service.base_url, headers, poll, args.rate, rate_total,
                            args.timeout)
    rows.append(paced.summary())
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| level | requests | 2xx | 5xx | 503 overload | timeouts | other | duplicates | req/s | p50 ms | "
             "p95 ms | p99 ms | load avg |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['level']} | {row['requests']:,} | {row['ok']:,} | {row['server_error']} | "
                     f"{row['overload']} | {row['timeout']} | {row['other']} | {row.get('duplicates', '')} | "
                     f"{row['throughput_rps']:.0f} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
                     f"{row['p99_ms']:.1f} | {row['load_average_1m']:.1f} |")
    return "\n".join(lines)


def verdict(backend: str, rows: list[dict]) -> list[str]:
    problems = [f"{row['level']}: {row['requests'] - row['ok']} errors" for row in rows
                if row["ok"] != row["requests"]]
    problems += [f"{row['level']}: {row['duplicates']} duplicates" for row in rows if row.get("duplicates")]
    paced = rows[-1]
    if backend == "postgres" and not paced["p99_ms"] < TARGET_P99_MS:
        problems.append(f"{paced['level']}: p99 {paced['p99_ms']:.1f} ms >= {TARGET_P99_MS:g} ms")
    return problems


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="wiped first: a database of its own")
    parser.add_argument("--broker-url", default=DEFAULT_BROKER_URL, help="flushed first: a Redis db of its own")
    parser.add_argument("--submissions", type=int, default=500)
    parser.add_argument("--levels", default="10,50,100,200,500")
    parser.add_argument("--polls", type=int, default=20_000, help="poll requests in all, rate-limited level included")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second of the rate-limited level")
    parser.add_argument("--rate-seconds", type=float, default=25.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="client timeout per request, seconds")
    parser.add_argument("--api-workers", type=int, default=None, help="uvicorn worker processes (setting default)")
    parser.add_argument("--quick", action="store_true", help="100 submissions, 4,000 polls, 5 s at the rate")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = parser.parse_args()
    args.levels = [int(level) for level in args.levels.split(",")]
    if args.quick:
        args.submissions, args.polls, args.rate_seconds = 100, 4_000, 5.0
    return args


def main() -> int:
    args = parse_args()
    backends, skipped = choose_backends(args.backends.split(","), args.database_url, args.broker_url)
    env = {"MODELPRESS_API_WORKERS": str(args.api_workers)} if args.api_workers else {}
    workers = args.api_workers or Settings().resolved_api_workers
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count(), "api_workers": workers,
              "skipped": skipped, "backends": {}}
    failed = False
    with tempfile.TemporaryDirectory() as example_dir:
        for backend in backends:
            started = time.perf_counter()
            with live_service(backend, env) as service:
                rows = asyncio.run(run_backend(service, args, Path(example_dir)))
            problems = verdict(backend.name, rows)
            failed |= bool(problems)
            report["backends"][backend.name] = {"rows": rows, "problems": problems,
                                                "seconds": time.perf_counter() - started}
            print(f"\n### {backend.name}: {workers} API worker process(es), {os.cpu_count()} CPUs, load average "
                  "(1 min) at the end of each level\n")
            print(format_table(rows))
            print("\ntargets met" if not problems else "\ntargets missed: " + "; ".join(problems))
    for line in skipped:
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
