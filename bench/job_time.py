"""Job time of the demo's int8 PTQ job, cold and warm: one worker on the embedded default runs the same job
several times for one tenant. The first job pays for the worker's first compile (Inductor's precompiled header)
and an empty compile cache; the later ones find the zygote warm, the tenant's compile cache filled and the
baseline stored, as a tenant's repeated jobs do. Then each job's phases, in seconds, from the times of its log
lines (the worker's steps and each new phase the job's process reported).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.job_time [--jobs 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from modelpress.demo import _parse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    from modelpress.client import Client
    from modelpress.demo import _free_port, build_example, wait_ready
    from modelpress.service_commands import start_service, stop_service

    data_dir = Path(tempfile.mkdtemp(prefix="modelpress-job-time-"))
    model_path, dataset_path = build_example(data_dir / "example")
    port = _free_port()
    processes = start_service(data_dir, "127.0.0.1", port, data_dir / "service.log")
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, processes=processes)
        os.environ["MODELPRESS_DATA_DIR"] = str(data_dir)
        from app.auth.service import create_key
        from core.db.session import session_scope
        with session_scope() as session:
            key = create_key(session, "job-time")
        client = Client(base_url, key)
        model, dataset = client.upload_model(model_path), client.upload_dataset(dataset_path)
        spec = {"model_id": model.id, "dataset_id": dataset.id,
                "stages": [{"method": "ptq", "calibration_split": "train", "calibration_samples": 512}],
                "evaluation": {"split": "val", "latency": True, "latency_batch_sizes": [1, 32], "compile": True}}
        print(f"load average before: {os.getloadavg()[0]:.1f}\n")
        print("| job | queued s | job s | baseline reused | latency | speedup b1 / b32 |")
        print("|---|---|---|---|---|---|")
        jobs = []
        for index in range(args.jobs):
            job = client.wait(client.submit_job(spec)["id"])
            jobs.append(job)
            final = job["metrics"]["final"]
            speedup = final.get("speedup")
            print(f"| {index + 1} | {_parse(job['started_at']) - _parse(job['created_at']):.1f} | "
                  f"{_parse(job['finished_at']) - _parse(job['started_at']):.1f} | "
                  f"{job['metrics']['baseline'].get('reused', False)} | "
                  f"{'reliable' if final.get('latency_reliable') else final.get('latency_unreliable')} | "
                  f"{' / '.join(f'{speedup[b]:.2f}x' for b in ('1', '32')) if speedup else '-'} |", flush=True)
        print(f"\nload average after: {os.getloadavg()[0]:.1f}")
        print_phases(client, jobs)
    finally:
        stop_service(processes)


def phases(client, job: dict) -> dict[str, float]:
    """Seconds from each line of the job's log to the next (the last: to the job's end), named by the line."""
    lines = client.logs(job["id"], limit=1000)["items"]
    names = {"attempt": "claim, fetch inputs", "inputs fetched": "start the job's process"}
    marks = [(next((v for k, v in names.items() if line["message"].startswith(k)), line["message"]),
              _parse(line["at"])) for line in lines if not line["message"].startswith("job ")]
    ends = [at for _, at in marks[1:]] + [_parse(job["finished_at"])]
    durations: dict[str, float] = {}
    for (name, at), end in zip(marks, ends):
        durations[name] = durations.get(name, 0.0) + end - at
    return durations


def print_phases(client, jobs: list[dict]) -> None:
    per_job = [phases(client, job) for job in jobs]
    names = list(dict.fromkeys(name for durations in per_job for name in durations))
    print("\n| phase | " + " | ".join(f"job {index + 1} s" for index in range(len(jobs))) + " |")
    print("|---|" + "---|" * len(jobs))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{d[name]:.2f}" if name in d else "" for d in per_job) + " |")


if __name__ == "__main__":
    main()
