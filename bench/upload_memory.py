"""Peak memory of the API process while a large dataset upload streams in (issue 2's 1 GB figure).

Starts the API alone on a fresh embedded data directory, writes a ~SIZE_MB .npz to disk without holding it in
memory, uploads it with a streaming client, and reads the API process's peak resident set (VmHWM) before and
after. Prints a markdown table and writes bench/results/upload_memory.json.

    .venv/bin/python bench/upload_memory.py [--size-mb 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def write_large_npz(path: Path, size_mb: int) -> Path:
    """One float32 array 'train.x' of about size_mb MiB, written in 8 MiB slices."""
    rows, width = size_mb * 1024 * 1024 // (4 * 1024), 1024
    header = {"descr": "<f4", "fortran_order": False, "shape": (rows, width)}
    block = np.random.default_rng(0).standard_normal((2048, width), dtype=np.float32)
    with zipfile.ZipFile(path, "w", allowZip64=True) as archive:
        with archive.open("train.x.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_2_0(member, header)
            for start in range(0, rows, len(block)):
                member.write(block[: min(len(block), rows - start)].tobytes())
        labels = np.zeros(rows, dtype=np.int64)
        with archive.open("train.y.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, labels)
    return path


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelpress-bench-") as tmp:
        tmp_path = Path(tmp)
        env = {**os.environ, "MODELPRESS_DATA_DIR": str(tmp_path / "data"),
               "MODELPRESS_MAX_DATASET_BYTES": str(8 * 1024**3)}
        subprocess.run([sys.executable, "-m", "modelpress.cli", "migrate"], env=env, check=True, cwd=ROOT,
                       stdout=subprocess.DEVNULL)
        key = subprocess.run([sys.executable, "-m", "modelpress.cli", "keys", "create", "--tenant", "bench"], env=env,
                             check=True, cwd=ROOT, capture_output=True, text=True).stdout.strip()
        port = 8765
        api = subprocess.Popen([sys.executable, "-m", "modelpress.cli", "api", "--port", str(port)], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            dataset = write_large_npz(tmp_path / "large.npz", args.size_mb)
            size = dataset.stat().st_size
            idle_mb = peak_rss_mb(api.pid)
            started = time.monotonic()
            with open(dataset, "rb") as file:
                response = httpx.post(f"{base}/v1/datasets", headers={"Authorization": f"Bearer {key}"},
                                      files={"file": ("large.npz", file)}, timeout=3600)
            seconds = time.monotonic() - started
            response.raise_for_status()
            peak_mb = peak_rss_mb(api.pid)
        finally:
            api.terminate()
            api.wait()
    result = {"upload_bytes": size, "api_peak_rss_before_mb": round(idle_mb, 1),
              "api_peak_rss_after_mb": round(peak_mb, 1), "growth_mb": round(peak_mb - idle_mb, 1),
              "upload_seconds": round(seconds, 1), "throughput_mb_s": round(size / 1024**2 / seconds, 1)}
    print("| upload | API peak RSS before | API peak RSS during/after | growth | time | throughput |")
    print("|---|---|---|---|---|---|")
    print(f"| {size / 1024**3:.2f} GiB .npz | {idle_mb:.0f} MiB | {peak_mb:.0f} MiB | {peak_mb - idle_mb:.0f} MiB | "
          f"{seconds:.0f} s | {result['throughput_mb_s']} MiB/s |")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "upload_memory.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
