"""One-command GPU check: a worker on CUDA runs one job through KD, QAT with mixed precision, iPQ (k-means on the
device) and int8 PTQ, and the check prints what ran on the GPU with its figures.

    ./scripts/gpu-check            # or: .venv/bin/python -m bench.gpu_check [--steps 300]

It starts the API and one worker on the embedded default in a temporary data directory with
MODELPRESS_DEVICE=cuda, uploads the digits CNN (compression.examples) and follows the job. Where no CUDA device
is visible it says so and exits with status 0 without starting anything: the suite never needs a GPU. The
figures go into docs/benchmarks.md with the date and the GPU (`torch.cuda.get_device_name()`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def cuda_device() -> str | None:
    """The name of the first CUDA device, or None (with the reason printed) when there is none to use."""
    import torch
    if not torch.cuda.is_available():
        built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        print(f"gpu-check: SKIPPED: no CUDA device visible here (torch {torch.__version__}, {built}); nothing "
              "was started. Run it on a machine with a GPU.")
        return None
    return torch.cuda.get_device_name(0)


def stages(steps: int) -> list[dict]:
    # Warmup shorter than the run: qat's own default warmup (50 steps) would not fit a short check.
    training = {"steps": steps, "batch_size": 64, "lr": 1e-3, "mixed_precision": True,
                "warmup_steps": min(50, steps // 2)}
    return [{"method": "kd", "student": {"kind": "input"}, "training": training},
            {"method": "qat", "weight_bits": 4, "activation_bits": 8, "training": training},
            {"method": "ipq", "centroids": 16, "num_groups": 2, "min_weights": 256, "training": training},
            {"method": "ptq", "calibration_samples": 256}]


def run(steps: int) -> int:
    from modelpress.service_commands import start_service, stop_service
    from modelpress.client import Client
    from modelpress.demo import _free_port, build_example, wait_ready

    data_dir = Path(tempfile.mkdtemp(prefix="modelpress-gpu-check-"))
    model_path, dataset_path = build_example(data_dir / "example")
    port = _free_port()
    processes = start_service(data_dir, "127.0.0.1", port, data_dir / "service.log",
                              env={"MODELPRESS_DEVICE": "cuda"})
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_ready(base_url, processes=processes)
        from app.auth.service import create_key
        from core.db.session import session_scope
        with session_scope() as session:
            key = create_key(session, "gpu-check")
        client = Client(base_url, key)
        model, dataset = client.upload_model(model_path), client.upload_dataset(dataset_path)
        started = time.monotonic()
        job = client.submit_job({"model_id": model.id, "dataset_id": dataset.id, "stages": stages(steps),
                                 "evaluation": {"latency": True, "latency_batch_sizes": [1, 32]}})
        job = client.wait(job["id"], timeout=1800)
        print(f"job {job['id']}: {job['status']} in {time.monotonic() - started:.1f} s (log: {data_dir})")
        if job["status"] != "succeeded":
            print(json.dumps(job["error"], indent=1))
            return 1
        print(report(job))
        return 0
    finally:
        stop_service(processes)


def report(job: dict) -> str:
    baseline = job["metrics"]["baseline"]
    lines = [f"versions: {job['versions']}", "",
             "| stage | accuracy | size bytes | wall s | latency ms b1 / b32 (fp32 alongside) | model on |",
             "|---|---|---|---|---|---|"]
    lines.append(f"| upload | {baseline.get('accuracy')} | {baseline['size_bytes']:,} | | | |")
    for stage in job["metrics"]["stages"]:
        metrics = stage["metrics"]
        latency = metrics.get("latency_ms", {})
        reference = metrics.get("reference_latency_ms", {})
        timing = " / ".join(f"{latency[b]:.3f} ({reference.get(b, 0):.3f})" for b in sorted(latency, key=int))
        lines.append(f"| {stage['method']} | {metrics.get('accuracy')} | {metrics['size_bytes']:,} | "
                     f"{metrics['wall_time_s']} | {timing or metrics.get('latency_unreliable', '')} | "
                     f"{metrics['device']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps of each KD, QAT and iPQ stage")
    args = parser.parse_args(argv)
    device = cuda_device()
    if device is None:
        return 0
    print(f"gpu-check: {device}, {time.strftime('%Y-%m-%d')}")
    return run(args.steps)


if __name__ == "__main__":
    sys.exit(main())
