"""A multi-GB dataset through the resumable upload path, with the API's memory and the throughput.

Starts the API alone (one process) on a fresh embedded data directory (SQLite, local file store), writes a
~SIZE_GB .npz to disk without holding it in memory, and uploads it in parts of PART_MB: halfway, one part's
connection is cut mid-body (a dropped connection); the client then asks the session which parts arrived and
sends the rest, and completes the upload (the API assembles, checks the sha256 and validates the archive).
Reads the API process's resident set before, its peak (VmHWM) and after. Prints a markdown table and writes
bench/results/upload_resumable.json.

    .venv/bin/python -m bench.upload_resumable [--size-gb 5] [--part-mb 64]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.upload_memory import write_large_npz
from modelpress.demo import _free_port

ROOT = Path(__file__).resolve().parents[1]


def rss_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(8 * 1024**2):
            digest.update(chunk)
    return digest.hexdigest()


def part_body(path: Path, offset: int, length: int, cut_after: int | None = None):
    """The part's bytes in 1 MiB pieces; with `cut_after`, the connection breaks after that many bytes."""
    with open(path, "rb") as file:
        file.seek(offset)
        sent = 0
        while sent < length:
            chunk = file.read(min(1024**2, length - sent))
            sent += len(chunk)
            yield chunk
            if cut_after is not None and sent >= cut_after:
                raise ConnectionAbortedError("connection dropped (simulated)")


def send_part(client: httpx.Client, upload_id: str, path: Path, number: int, part_bytes: int, size: int,
              cut: bool = False) -> None:
    offset = number * part_bytes
    length = min(part_bytes, size - offset)
    digest = hashlib.sha256()
    for chunk in part_body(path, offset, length):
        digest.update(chunk)
    response = client.put(f"/v1/uploads/{upload_id}/parts/{number}",
                          content=part_body(path, offset, length, cut_after=length // 2 if cut else None),
                          headers={"X-Checksum-SHA256": digest.hexdigest(), "Content-Length": str(length)})
    response.raise_for_status()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-gb", type=float, default=5.0)
    parser.add_argument("--part-mb", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelpress-bench-") as tmp:
        tmp_path = Path(tmp)
        limit = str(int((args.size_gb + 1) * 1024**3))
        env = {**os.environ, "MODELPRESS_DATA_DIR": str(tmp_path / "data"), "MODELPRESS_MAX_DATASET_BYTES": limit,
               "MODELPRESS_ARCHIVE_MAX_MEMBER_BYTES": limit, "MODELPRESS_ARCHIVE_MAX_TOTAL_BYTES": limit,
               "MODELPRESS_UPLOAD_PART_MAX_BYTES": str(args.part_mb * 1024**2), "MODELPRESS_API_ACCESS_LOG": "false"}
        subprocess.run([sys.executable, "-m", "modelpress.cli", "migrate"], env=env, check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        key = subprocess.run([sys.executable, "-m", "modelpress.cli", "keys", "create", "--tenant", "bench"], env=env,
                             check=True, cwd=ROOT, capture_output=True, text=True).stdout.strip()
        port = _free_port()
        api = subprocess.Popen([sys.executable, "-m", "modelpress.cli", "api", "--port", str(port), "--workers", "1"],
                               env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            dataset = write_large_npz(tmp_path / "large.npz", int(args.size_gb * 1024))
            size, sha256 = dataset.stat().st_size, file_sha256(dataset)
            before_mb = rss_mb(api.pid, "VmRSS")
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=3600) as client:
                started = time.monotonic()
                upload = client.post("/v1/uploads", json={"kind": "dataset", "name": "large.npz", "size_bytes": size,
                                                          "sha256": sha256}).json()
                total, part_bytes = upload["parts_total"], upload["part_bytes"]
                dropped = total // 2
                for number in range(total):
                    if number == dropped:
                        try:
                            send_part(client, upload["id"], dataset, number, part_bytes, size, cut=True)
                        except (httpx.HTTPError, ConnectionAbortedError):
                            break
                        raise SystemExit("the cut connection was not noticed")
                    send_part(client, upload["id"], dataset, number, part_bytes, size)
                received = client.get(f"/v1/uploads/{upload['id']}").json()["parts_received"]
                missing = sorted(set(range(total)) - set(received))
                for number in missing:  # resume: only what did not arrive
                    send_part(client, upload["id"], dataset, number, part_bytes, size)
                parts_done = time.monotonic()
                done = client.post(f"/v1/uploads/{upload['id']}/complete")
                done.raise_for_status()
                finished = time.monotonic()
            peak_mb, after_mb = rss_mb(api.pid, "VmHWM"), rss_mb(api.pid, "VmRSS")
            assert done.json()["result"]["sha256"] == sha256
        finally:
            api.terminate()
            api.wait()
    result = {"upload_bytes": size, "parts": total, "part_bytes": part_bytes, "dropped_part": dropped,
              "parts_resent_after_drop": len(missing), "api_rss_before_mb": round(before_mb, 1),
              "api_peak_rss_mb": round(peak_mb, 1), "api_rss_after_mb": round(after_mb, 1),
              "parts_seconds": round(parts_done - started, 1), "complete_seconds": round(finished - parts_done, 1),
              "parts_throughput_mib_s": round(size / 1024**2 / (parts_done - started), 1),
              "overall_throughput_mib_s": round(size / 1024**2 / (finished - started), 1)}
    print("| upload | parts | API RSS before | API peak RSS | API RSS after | parts sent | complete | "
          "throughput (parts / overall) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {size / 1024**3:.2f} GiB .npz | {total} x {part_bytes // 1024**2} MiB, part {dropped} cut, "
          f"{len(missing)} resent | {before_mb:.0f} MiB | {peak_mb:.0f} MiB | {after_mb:.0f} MiB | "
          f"{result['parts_seconds']:.0f} s | {result['complete_seconds']:.0f} s | "
          f"{result['parts_throughput_mib_s']} / {result['overall_throughput_mib_s']} MiB/s |")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "upload_resumable.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
