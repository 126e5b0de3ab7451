"""Hostile uploads against a running service: what each gets, and what it costs the API and the worker.

Starts the API and one worker on a fresh embedded data directory (default settings, so the default archive caps),
then for every input of the hostile corpus (`tests/hostile/corpus.py`, bombs at full size: a 5 GiB deflate
member, a 1 GiB bzip2 member, a 512 MiB whitespace model.json, 1 GiB of labels):
1. uploads it through the API and records the answer;
2. writes it straight into the store (as if the API check had been bypassed), submits a job on it and records
   the job's outcome.
Peak RSS is each process tree's largest VmHWM; it is reset before each input (writing 5 to /proc/PID/clear_refs),
so every row shows what that input cost. Prints a markdown table and writes bench/results/hostile_uploads.json.

    .venv/bin/python bench/hostile_uploads.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile.corpus import MiB, attacks, write_clean_files  # noqa: E402
from tests.hostile.slip_in import store_directly  # noqa: E402

FULL_SIZE = {"deflate zip bomb": 5 * 1024 * MiB, "bzip2 zip bomb": 1024 * MiB, "JSON whitespace bomb": 512 * MiB,
             "npz label array bomb": 1024 * MiB}


def process_tree(pid: int) -> list[int]:
    pids, stack = [], [pid]
    while stack:
        current = stack.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            children = (task / "children").read_text().split() if (task / "children").exists() else []
            stack.extend(int(child) for child in children)
    return pids


def peak_rss_mib(pid: int) -> float:
    """The largest VmHWM (peak resident set) of any process in `pid`'s tree."""
    peaks = []
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)


def reset_peaks(pid: int) -> None:
    for member in process_tree(pid):
        Path(f"/proc/{member}/clear_refs").write_text("5")


def wait_job(client: httpx.Client, job_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("failed", "succeeded", "cancelled"):
            return job
        time.sleep(0.2)
    raise TimeoutError(job_id)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", help="run only these inputs (names as in the table)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelpress-hostile-") as tmp:
        tmp_path = Path(tmp)
        env = {**os.environ, "MODELPRESS_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
        os.environ.update(env)
        cli = [sys.executable, "-m", "modelpress.cli"]
        subprocess.run([*cli, "migrate"], env=env, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        key = subprocess.run([*cli, "keys", "create", "--tenant", "bench"], env=env, check=True, cwd=ROOT,
                             capture_output=True, text=True).stdout.strip()
        port = 8766
        log = open(tmp_path / "service.log", "ab")
        api = subprocess.Popen([*cli, "api", "--port", str(port)], env=env, cwd=ROOT, stdout=log, stderr=log,
                               start_new_session=True)
        worker = subprocess.Popen([*cli, "worker", "--name", "bench@%h"], env=env, cwd=ROOT, stdout=log, stderr=log,
                                  start_new_session=True)
        try:
            rows, idle = run(api, worker, port, key, tmp_path, args.only)
        finally:
            stop(api, worker)
    print(f"Idle peak RSS before the inputs: API {idle[0]:.0f} MiB, worker {idle[1]:.0f} MiB\n")
    print("| input | compressed size | API answer | API peak RSS | job on it (bypassing the API) | worker peak RSS "
          "| payload ran |")
    print("|---|---:|---|---:|---|---:|---|")
    for row in rows:
        print(f"| {row['input']} | {row['compressed_bytes']:,} B | {row['api_answer']} | {row['api_peak_mib']:.0f} MiB "
              f"| {row['job']} | {row['worker_peak_mib']:.0f} MiB | {'YES' if row['payload_ran'] else 'no'} |")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "hostile_uploads.json").write_text(json.dumps({"idle_mib": idle, "rows": rows}, indent=2))
    return 0


def stop(*processes: subprocess.Popen) -> None:
    for process in processes:
        os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:  # a worker's warm shutdown can outwait us; the results are in
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run(api, worker, port: int, key: str, tmp_path: Path, only: list[str] | None) -> tuple[list[dict], tuple]:
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
                          timeout=3600)
    for _ in range(300):
        try:
            if client.get("/readyz").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    clean = write_clean_files(tmp_path)
    ids = {kind: client.post(f"/v1/{kind}s", files={"file": (f"clean.{kind}", data)}).json()["id"]
           for kind, data in clean.items()}
    warmup = client.post("/v1/jobs", json={"model_id": ids["model"], "dataset_id": ids["dataset"],
                                           "stages": [{"method": "ptq", "calibration_samples": 8}],
                                           "evaluation": {"latency": False}}).json()
    wait_job(client, warmup["id"])  # the worker's imports and first job are not charged to the first input
    idle = (peak_rss_mib(api.pid), peak_rss_mib(worker.pid))
    marker = tmp_path / "payload-ran"
    rows = []
    for attack in attacks():
        if only and attack.name not in only:
            continue
        if attack.bomb:
            attack = next(a for a in attacks(FULL_SIZE[attack.name]) if a.name == attack.name)
        data = attack.build(clean[attack.kind], marker)
        reset_peaks(api.pid)
        response = client.post(f"/v1/{attack.kind}s", files={"file": ("upload", data)})
        answer = f"{response.status_code} {response.json().get('error', 'created')}"
        api_peak = peak_rss_mib(api.pid)
        stored = store_directly(attack.kind, data, ids[attack.kind])
        reset_peaks(worker.pid)
        job = client.post("/v1/jobs", json={**{f"{k}_id": v for k, v in ids.items()}, f"{attack.kind}_id": stored,
                                            "stages": [{"method": "ptq", "calibration_samples": 8}],
                                            "evaluation": {"latency": False}}).json()
        finished = wait_job(client, job["id"])
        outcome = f"{finished['status']} {(finished.get('error') or {}).get('code', '')}".strip()
        rows.append({"input": attack.name, "compressed_bytes": len(data), "api_answer": answer,
                     "api_detail": response.json().get("detail", "")[:300], "api_peak_mib": api_peak,
                     "job": outcome, "job_message": ((finished.get("error") or {}).get("message") or "")[:300],
                     "worker_peak_mib": peak_rss_mib(worker.pid), "payload_ran": marker.exists()})
        print(f"{attack.name}: {answer}, job {outcome}, marker {'WRITTEN' if marker.exists() else 'absent'}",
              file=sys.stderr)
    return rows, idle


if __name__ == "__main__":
    sys.exit(main())
