"""Issue 3 benchmark, all quantization rows in one table from ONE fp32 model: a ResNet-style CNN on Fashion-MNIST,
fp32 vs PTQ int8 (x86 pt2e default and each activation observer), PTQ W4A8 / W4A4 / W2A8, and QAT (STE, LSQ,
PACT, SAWB) at 4, 3 and 2 bits.

Every row is one job through `compression.pipeline.run_pipeline` (upload .pt2 + .npz, one stage spec, an
EvaluationSpec on the test split), so top-1, file sizes, compression ratio, latency and wall time are the figures
the service reports. Columns:

- top-1 on the test images (2,000 in quick mode), and its difference to fp32 in points;
- `model file`: the bytes of the stage's main model artifact and the pipeline's `compression_ratio` (upload .pt2
  bytes / that file). For QAT the main artifact is a float .pt2 holding the quantized values, so its ratio is ~1;
- `packed`: the bit-packed safetensors file (codes + scales) where the method writes one, and its ratio;
- latency: fp32 ms / model ms at batch 1 and 32, both compiled (torch.compile, inductor freezing, as the pipeline
  does with EvaluationSpec(compile=True)), timed in alternation with the fp32 upload. Measured for the rows that
  really run int8 kernels (the x86 pt2e default); the other rows simulate quantization in fp32 arithmetic
  (fake-quant / dequantised weights), so their latency is "n/a (simulated)" and not measured;
- stage s: the method's own wall time; job s: the whole run_pipeline call (load, baseline and stage evaluation,
  latency when measured).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quantization.run --quick           # ~15 min on one thread
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.quantization.run --quick --qat-steps 100   # ~4 min
    OMP_NUM_THREADS=2 .venv/bin/python -m bench.quantization.run --quick --int8-speed-only   # int8 row again,
                                                             # 2 threads, appended to the same JSON

The fp32 model is trained once and cached under bench/results/cache/. Writes bench/results/quantization_<mode>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common.data import fashion_mnist_subset, make_task
from bench.common.models import RESULTS, trained_model_path
from compression import zoo
from compression.context import RunContext
from compression.io import input_names, load_program
from compression.pipeline import run_pipeline
from compression.specs.common import EvaluationSpec
from compression.specs.ptq import ActivationQuantSpec, PTQSpec, WeightQuantSpec
from compression.specs.qat import QATSpec
from compression.specs.training import TrainingSpec

ARCHITECTURE = {"width_mult": 1.0, "depth_mult": 0.5}  # ResNet, 16/32/64 channels, one block per stage
SETTINGS = {
    "quick": {"train": 12_000, "test": 2_000, "float_steps": 600, "qat_steps": 1000, "lsq_w4a4_steps": 1000,
              "bits": [4, 3, 2]},
    "full": {"train": 60_000, "test": 10_000, "float_steps": 3000, "qat_steps": 800, "lsq_w4a4_steps": 3000,
             "bits": [4, 3, 2]},
}
BATCH_SIZES = [1, 32]


def qat_spec(quantizer: str, bits: int, steps: int) -> QATSpec:
    # The settings of bench/qat/run.py: first/last layer at 8 bits, BN frozen for the last quarter.
    return QATSpec(quantizer=quantizer, weight_bits=bits, activation_bits=bits, first_last_bits=8,
                   freeze_bn_after=steps * 3 // 4,
                   training=TrainingSpec(steps=steps, batch_size=64, lr=5e-4, warmup_steps=steps // 10))


def rows(settings: dict) -> list[tuple[str, object, bool, int | None]]:
    """(label, stage spec, measure compiled latency, QAT steps)."""
    observers = ["minmax", "moving_average_minmax", "percentile", "mse", "kl"]
    ptq = [("PTQ W8A8 x86 pt2e (default PTQSpec())", PTQSpec(), True, None)]
    # A non-default observer sends the spec down the general (simulated) path; "minmax" equals the default spec,
    # so it is marked with export_onnx=False (a general-path-only field) to be measured the same way as the others.
    ptq += [(f"PTQ W8A8 observer {name}", PTQSpec(activations=ActivationQuantSpec(observer=name),
                                                  export_onnx=name != "minmax"), False, None)
            for name in observers]
    ptq += [
        ("PTQ W4A8 per-channel, mse clip", PTQSpec(weights=WeightQuantSpec(bits=4, range="mse")), False, None),
        ("PTQ W4A8 g32 mse + bias corr.", PTQSpec(weights=WeightQuantSpec(bits=4, granularity="per_group",
                                                                          group_size=32, range="mse"),
                                                  bias_correction=True), False, None),
        ("PTQ W4A4 g32 mse, act. mse", PTQSpec(weights=WeightQuantSpec(bits=4, granularity="per_group",
                                                                       group_size=32, range="mse"),
                                               activations=ActivationQuantSpec(bits=4, observer="mse")), False, None),
        ("PTQ W2A8 g16 mse", PTQSpec(weights=WeightQuantSpec(bits=2, granularity="per_group", group_size=16,
                                                             range="mse")), False, None),
    ]
    qat = []
    for bits in settings["bits"]:
        for quantizer in ["ste", "lsq", "pact", "sawb"]:
            steps = settings["lsq_w4a4_steps"] if (quantizer, bits) == ("lsq", 4) else settings["qat_steps"]
            qat.append((f"QAT {quantizer.upper()} W{bits}A{bits}", qat_spec(quantizer, bits, steps), False, steps))
    return ptq + qat


def run_row(label: str, spec, latency: bool, steps: int | None, model_path: Path, data_path: Path,
            test_samples: int) -> tuple[dict, dict]:
    evaluation = EvaluationSpec(split="test", latency=latency, compile=True, latency_batch_sizes=BATCH_SIZES)
    with tempfile.TemporaryDirectory() as workdir:
        started = time.monotonic()
        try:
            result = run_pipeline(model_path, data_path, [spec], evaluation, RunContext(), workdir)
        except Exception as error:  # one broken recipe must not hide the other rows
            print(f"{label}: FAILED {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            return {"config": label, "error": f"{type(error).__name__}: {str(error)[:300]}",
                    "job_s": round(time.monotonic() - started, 1), "qat_steps": steps}, {}
        job_s = time.monotonic() - started
        stage = result.stages[0]
        m = stage.metrics
        packed = next((a for a in stage.artifacts if a.kind == "packed.safetensors"), None)
        row = {
            "config": label, "method": stage.method, "qat_steps": steps,
            "top1": round(100 * m["accuracy"], 2),
            "model_artifact": m["model_artifact"], "size_bytes": m["size_bytes"],
            "compression_ratio": round(m["compression_ratio"], 2),
            "packed_bytes": packed.size_bytes if packed else None,
            "packed_ratio": round(result.baseline["size_bytes"] / packed.size_bytes, 2) if packed else None,
            "artifacts": {a.name: a.size_bytes for a in stage.artifacts},
            "latency_ms": m.get("latency_ms"), "fp32_latency_ms": m.get("reference_latency_ms"),
            "speedup": m.get("speedup"), "latency": "compiled" if "latency_ms" in m else
            (f"failed: {m['latency_error']}" if "latency_error" in m else "n/a (simulated)"),
            "stage_s": round(m["wall_time_s"], 1), "job_s": round(job_s, 1),
            "pact_fallback_to_lsq": m["method_metrics"].get("pact_fallback_to_lsq"),
        }
    speed = " ".join(f"b{b} {v:.2f}x" for b, v in (row["speedup"] or {}).items())
    print(f"{label}: top-1 {row['top1']:.2f}, {row['size_bytes']:,} B ({row['compression_ratio']}x), "
          f"packed {row['packed_bytes']}, {speed or row['latency']}, stage {row['stage_s']} s, job {row['job_s']} s",
          file=sys.stderr, flush=True)
    return row, result.baseline


def environment() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "processor": platform.processor() or platform.machine(), "load_average_1m": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12k train / 2k test images, short QAT schedules")
    parser.add_argument("--int8-speed-only", action="store_true",
                        help="only the default int8 row with compiled latency (e.g. under OMP_NUM_THREADS=2); "
                             "appended to the JSON of a previous full run")
    parser.add_argument("--qat-steps", type=int, default=None, help="QAT steps of every row but LSQ W4A4")
    parser.add_argument("--lsq-w4a4-steps", type=int, default=None, help="QAT steps of the LSQ W4A4 row")
    parser.add_argument("--only", default=None, help="run only rows whose label contains this (smoke tests)")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    settings = dict(SETTINGS[mode])
    for key in ("qat_steps", "lsq_w4a4_steps"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    arrays = fashion_mnist_subset(settings["train"], settings["test"], eval_split="test")
    custom = "" if settings == SETTINGS[mode] else f"_qat{settings['qat_steps']}_lsq{settings['lsq_w4a4_steps']}"
    out = RESULTS / f"quantization_{mode}{custom}.json"
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_path = trained_model_path(
            f"quantization_resnet_{mode}_{settings['train']}_{settings['float_steps']}.pt2",
            lambda: zoo.build("resnet", in_channels=1, num_classes=10, **ARCHITECTURE), make_task(arrays, scratch),
            TrainingSpec(steps=settings["float_steps"], batch_size=128, lr=3e-3))
        name = input_names(load_program(model_path))[0]
        data_path = scratch / "fashion_mnist.npz"
        np.savez(data_path, **{key.replace(".x", f".{name}"): value for key, value in arrays.items()})
        table = rows(settings)
        if args.int8_speed_only:
            table = table[:1]
        elif args.only:
            table = [row for row in table if args.only.lower() in row[0].lower()]
        results, baseline = [], None
        for label, spec, latency, steps in table:
            row, row_baseline = run_row(label, spec, latency, steps, model_path, data_path, settings["test"])
            results.append(row)
            if latency and row_baseline:  # the fp32 row: the baseline measured with compiled latency
                baseline = row_baseline
            elif baseline is None and row_baseline:
                baseline = row_baseline
    total = round(time.monotonic() - started, 1)
    fp32 = {"config": "fp32 (upload)", "top1": round(100 * baseline["accuracy"], 2) if baseline else None,
            "model_artifact": model_path.name, "size_bytes": baseline["size_bytes"] if baseline else None,
            "compression_ratio": 1.0, "latency_ms_alone": baseline.get("latency_ms") if baseline else None,
            "parameters": baseline.get("parameters") if baseline else None}
    report = {"mode": mode, "settings": settings, "architecture": ARCHITECTURE, "fp32": fp32, "rows": results,
              "total_s": total, "environment": environment()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.int8_speed_only:
        previous = json.loads(out.read_text()) if out.exists() else {}
        previous[f"int8_speed_{torch.get_num_threads()}threads"] = {"row": results[0], "fp32": fp32,
                                                                     "environment": environment()}
        out.write_text(json.dumps(previous, indent=1))
        print(markdown(fp32, results, settings, mode, total))
        print(f"\nappended to {out}")
        return
    if not args.only:
        out.write_text(json.dumps(report, indent=1))
    print(markdown(fp32, results, settings, mode, total))
    print(targets(fp32, results))
    print(f"\nTotal {total} s" + ("" if args.only else f"; written {out}"))


def markdown(fp32: dict, results: list[dict], settings: dict, mode: str, total: float) -> str:
    lines = [f"\n## Quantization on Fashion-MNIST ({mode}: {settings['train']:,} train / {settings['test']:,} test "
             f"images; ResNet {ARCHITECTURE}, {fp32.get('parameters')} parameters; {torch.get_num_threads()} "
             f"thread(s))\n",
             "| config | top-1 % | vs fp32 | model file bytes (ratio) | packed bytes (ratio) | "
             "speedup vs fp32 b1 / b32 (compiled) | stage s | job s |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    # fp32 as timed in alternation with the int8 row (same load as the speedup), else timed alone in a baseline.
    timed = next((row["fp32_latency_ms"] for row in results if row.get("fp32_latency_ms")), None)
    fp32_ms = timed or fp32.get("latency_ms_alone") or {}
    lines.append(f"| fp32 (upload .pt2) | {fp32['top1']} | - | {fp32['size_bytes']:,} (1.00) | - | "
                 f"1.00 / 1.00 ({' / '.join(f'{v:.3f} ms' for v in fp32_ms.values()) or 'n/a'}) | - | - |")
    for row in results:
        label = row["config"] + (f" ({row['qat_steps']} steps)" if row.get("qat_steps") else "")
        if "error" in row:
            lines.append(f"| {label} | failed: {row['error'][:120]} | | | | | | {row['job_s']} |")
            continue
        delta = row["top1"] - fp32["top1"] if fp32["top1"] is not None else float("nan")
        packed = f"{row['packed_bytes']:,} ({row['packed_ratio']:.2f})" if row["packed_bytes"] else "-"
        if row["speedup"]:
            speed = " / ".join(f"{row['speedup'][str(b)]:.2f}x" for b in BATCH_SIZES)
            speed += " (" + " / ".join(f"{row['latency_ms'][str(b)]:.3f} ms" for b in BATCH_SIZES) + ")"
        else:
            speed = row["latency"]
        lines.append(f"| {label} | {row['top1']:.2f} | {delta:+.2f} | {row['size_bytes']:,} "
                     f"({row['compression_ratio']:.2f}) | {packed} | {speed} | {row['stage_s']} | {row['job_s']} |")
    lines.append(f"\nTotal wall time {total:.0f} s.")
    return "\n".join(lines)


def targets(fp32: dict, results: list[dict]) -> str:
    by = {row["config"]: row for row in results if "error" not in row}
    lines = ["\nTargets:"]
    int8 = [r for r in results if r["config"].startswith("PTQ W8A8") and "error" not in r]
    if int8 and fp32["top1"] is not None:
        worst = min(r["top1"] - fp32["top1"] for r in int8)
        lines.append(f"- int8 PTQ within 0.3 points of fp32: worst int8 row {worst:+.2f} -> "
                     f"{'met' if worst >= -0.3 else 'NOT met'}")
    lsq = by.get("QAT LSQ W4A4")
    if lsq and fp32["top1"] is not None:
        delta = lsq["top1"] - fp32["top1"]
        lines.append(f"- LSQ W4A4 within 1 point: {delta:+.2f} ({lsq['qat_steps']} steps) -> "
                     f"{'met' if delta >= -1.0 else 'NOT met'}")
    default = next((r for r in results if "default" in r["config"]), None)
    if default and default.get("speedup"):
        s = default["speedup"]["32"]
        lines.append(f"- int8 >= 2x faster than compiled fp32 at batch 32 ({torch.get_num_threads()} thread(s)): "
                     f"{s:.2f}x -> {'met' if s >= 2 else 'NOT met'}")
    elif default:
        lines.append(f"- int8 speed: not measured ({default.get('error') or default.get('latency')})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
