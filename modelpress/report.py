"""`modelpress report MODEL`: every job on one uploaded model (and the jobs that started from their results) in
one table, and plots of quality against size and against latency."""

from __future__ import annotations

import sys
from pathlib import Path

from modelpress.compare import compare
from modelpress.job_commands import client_for
from modelpress.jobs import Job
from modelpress.plots import Point, scatter


def jobs_on_model(jobs: list[Job], model_id: str) -> list[Job]:
    """Jobs on `model_id`, and jobs whose parent job is one of them (at any depth)."""
    found = {job.id: job for job in jobs if job.model_id == model_id}
    grew = True
    while grew:
        children = {job.id: job for job in jobs if job.data.get("parent_job_id") in found and job.id not in found}
        found.update(children)
        grew = bool(children)
    return sorted(found.values(), key=lambda job: job.data["created_at"])


def plots(jobs: list[Job], directory: Path, model_id: str) -> list[Path]:
    rows = [r for r in compare(jobs) if r.status == "succeeded" and r.value is not None]
    if not rows:
        return []
    baseline = next(job.metrics["baseline"] for job in jobs if job.metrics.get("baseline"))
    metric = rows[0].metric
    written = []
    sized = [Point(r.size_bytes, r.value, r.methods) for r in rows if r.size_bytes]
    if sized and baseline.get("size_bytes") and baseline.get(metric) is not None:
        sized.append(Point(baseline["size_bytes"], baseline[metric], "uploaded", reference=True))
        written.append(_write(directory / f"{model_id}-{metric}-vs-bytes.svg",
                              scatter(sized, f"{model_id}: {metric} against size", "bytes", metric)))
    timed = [Point(r.latency_ms, r.value, r.methods) for r in rows if r.latency_ms]
    if timed:
        batch = next(r.latency_batch for r in rows if r.latency_ms)
        reference = (baseline.get("latency_ms") or {}).get(batch)
        if reference and baseline.get(metric) is not None:
            timed.append(Point(reference, baseline[metric], "uploaded", reference=True))
        written.append(_write(directory / f"{model_id}-{metric}-vs-latency.svg",
                              scatter(timed, f"{model_id}: {metric} against latency (batch {batch})",
                                      f"latency ms, batch {batch}", metric)))
    return written


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def cmd_report(args) -> int:
    with client_for(args) as client:
        jobs = jobs_on_model(client.jobs(), args.model)
    if not jobs:
        print(f"no jobs on model {args.model}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = compare(jobs).table()
    print(table)
    (out / f"{args.model}-jobs.md").write_text(table + "\n")
    for path in plots(jobs, out, args.model):
        print(f"wrote {path}", file=sys.stderr)
    return 0
