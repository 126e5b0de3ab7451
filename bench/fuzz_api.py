"""Schemathesis against a service this script starts itself, on each backend: requests sent and server errors.

Two passes per backend, both with an API key and schemathesis's `not_a_server_error` check:
- blind: every parameter generated from the OpenAPI document (ids are mostly unknown, so many answers are 404);
- seeded: the path ids fixed to a real model, dataset, finished job and artifact, so requests reach the code
  behind the lookups (bodies, queries and headers still generated).

Prints a markdown table per backend, every distinct 5xx (method, path, status, body), the exception lines of the
service log, and writes bench/results/fuzz_api.json. Needs the `fuzz` extra: `.venv/bin/pip install -e .[fuzz]`.

    .venv/bin/python -m bench.fuzz_api [--backends sqlite,postgres] [--max-examples 20]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.live_service import DEFAULT_BROKER_URL, DEFAULT_DATABASE_URL, ROOT, choose_backends, live_service
from bench.load import upload_example

ID_SEGMENT = re.compile(r"/(mdl|ds|job|art)_[^/]*")
EXCEPTION_LINE = re.compile(r"^(\w+\.)*\w*(Error|Exception|Exit)\b.*")


def seed_ids(base_url: str, headers: dict, directory: Path) -> dict[str, str]:
    """A model, a dataset, a finished job and its first artifact, for the seeded pass."""
    spec = upload_example(base_url, headers, directory)
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        job = client.post("/v1/jobs", json=spec).raise_for_status().json()
        deadline = time.monotonic() + 300
        while job["status"] not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(1)
            job = client.get(f"/v1/jobs/{job['id']}").raise_for_status().json()
        artifacts = client.get(f"/v1/jobs/{job['id']}/artifacts").raise_for_status().json()
    ids = {"model_id": spec["model_id"], "dataset_id": spec["dataset_id"], "job_id": job["id"]}
    if artifacts:
        ids["artifact_id"] = artifacts[0]["id"]
    return ids


def run_schemathesis(base_url: str, api_key: str, report_dir: Path, args, ids: dict[str, str] | None) -> dict:
    command = [str(Path(sys.executable).with_name("schemathesis"))]
    if ids:
        config = report_dir / "schemathesis.toml"
        config.write_text("[parameters]\n" + "".join(f'"path.{k}" = "{v}"\n' for k, v in ids.items()))
        command += ["--config-file", str(config)]
    command += ["run", f"{base_url}/openapi.json", "-H", f"Authorization: Bearer {api_key}",
                "--checks", "not_a_server_error", "--max-examples", str(args.max_examples), "--seed",
                str(args.seed), "--request-timeout", "60", "--report", "har,json", "--report-dir", str(report_dir)]
    finished = subprocess.run(command, capture_output=True, text=True, cwd=report_dir)
    har = json.loads(next(report_dir.glob("har-*.json")).read_text())
    entries = har["log"]["entries"]
    statuses = Counter(entry["response"]["status"] for entry in entries)
    errors: dict[str, dict] = {}
    for entry in entries:
        status = entry["response"]["status"]
        if status < 500:
            continue
        path = ID_SEGMENT.sub(lambda m: f"/{{{m.group(1)}_id}}", urlsplit(entry["request"]["url"]).path)
        group = errors.setdefault(f"{entry['request']['method']} {path} -> {status}", {
            "count": 0, "example_url": entry["request"]["url"][:300],
            "example_body": (entry["request"].get("postData") or {}).get("text", "")[:300],
            "response": entry["response"]["content"].get("text", "")[:300]})
        group["count"] += 1
    return {"requests": len(entries), "statuses": dict(sorted(statuses.items())),
            "server_errors": sum(n for status, n in statuses.items() if status >= 500), "distinct": errors,
            "schemathesis_exit": finished.returncode, "schemathesis_tail": finished.stdout[-1500:]}


def exception_lines(log_path: Path) -> dict[str, int]:
    lines = log_path.read_text(errors="replace").splitlines()
    return dict(Counter(line[:200] for line in lines if EXCEPTION_LINE.match(line)).most_common(20))


def format_table(backend: str, passes: dict[str, dict]) -> str:
    lines = [f"### {backend}", "", "| pass | requests | 2xx | 4xx | 5xx | statuses |", "|---|---:|---:|---:|---:|---|"]
    for name, result in passes.items():
        by_class = Counter(status // 100 for status, n in result["statuses"].items() for _ in range(n))
        lines.append(f"| {name} | {result['requests']:,} | {by_class[2]:,} | {by_class[4]:,} | "
                     f"{result['server_errors']} | {result['statuses']} |")
    for name, result in passes.items():
        for label, group in result["distinct"].items():
            lines.append(f"\n- {name}: `{label}` x{group['count']}: {group['example_url']} "
                         f"body={group['example_body']!r} -> {group['response']!r}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="wiped first: a database of its own")
    parser.add_argument("--broker-url", default=DEFAULT_BROKER_URL, help="flushed first: a Redis db of its own")
    parser.add_argument("--max-examples", type=int, default=20, help="per operation and phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fuzz_api.json")
    args = parser.parse_args()
    backends, skipped = choose_backends(args.backends.split(","), args.database_url, args.broker_url)
    report = {"args": {k: str(v) for k, v in vars(args).items()}, "skipped": skipped, "backends": {}}
    total_errors = 0
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            log_path = tmp / "service.log"
            with live_service(backend, keep_log=log_path) as service:
                passes = {}
                for name in ("blind", "seeded"):
                    report_dir = tmp / name
                    report_dir.mkdir()
                    ids = seed_ids(service.base_url, {"Authorization": f"Bearer {service.api_key}"},
                                   tmp) if name == "seeded" else None
                    passes[name] = run_schemathesis(service.base_url, service.api_key, report_dir, args, ids)
                    passes[name]["ids"] = ids
            exceptions = exception_lines(log_path)
        total_errors += sum(result["server_errors"] for result in passes.values())
        report["backends"][backend.name] = {"passes": passes, "log_exceptions": exceptions}
        print(format_table(backend.name, passes))
        print("\nservice log exception lines:", json.dumps(exceptions, indent=1) if exceptions else "none", "\n")
    for line in skipped:
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{total_errors} server errors in all; wrote {args.out}")
    return 1 if total_errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
