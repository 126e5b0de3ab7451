"""Every method's default spec on small CNNs shaped like real families (bench/cnn_families.py), in-process through
`compression.pipeline.run_pipeline` as the worker runs a job; a few training steps and samples so a case takes
seconds. Prints a table case x method -> ok / error (first line), seconds, metric drop (points), size ratio, and
flags a silent collapse: a stage that succeeds with no warning while its metric is far below the upload's, or
while one of its outputs (a second head the metric does not read) has a mean cosine to the upload's below 0.8.

    .venv/bin/python -m bench.cnn_shape_sweep                          # every case, every method
    .venv/bin/python -m bench.cnn_shape_sweep --cases unet,convnext --methods ptq,prune_structured
    .venv/bin/python -m bench.cnn_shape_sweep --dtype bfloat16        # uploads stored in half precision (or float64)
    .venv/bin/python -m bench.cnn_shape_sweep --decomposed            # uploads lowered to core ATen
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.cnn_families import CASE_NAMES, build_case, export_case
from compression.context import RunContext
from compression.pipeline import run_pipeline
from compression.specs import (
    DifferentiableQuantizationSpec,
    EvaluationSpec,
    FunctionMatchingSpec,
    IPQSpec,
    KDSpec,
    PruneSpec,
    PTQSpec,
    QATSpec,
    QuantizedDistillationSpec,
    QuantNoiseSpec,
)
from compression.specs.distill import LowRankStudent, ZooStudent
from compression.specs.training import TrainingSpec

RESULTS = Path(__file__).resolve().parent / "results"
COLLAPSE_POINTS = 20.0
COLLAPSE_COSINE = 0.8


def _training() -> TrainingSpec:
    return TrainingSpec(steps=3, batch_size=16, warmup_steps=0, checkpoint_every=1000)


def method_specs() -> dict:
    """Each method's default spec; only the step and sample counts are cut (defaults otherwise). Evaluation reads
    96 examples in one batch of up to 256: more than the bounded_batch case's export accepts (64)."""
    return {
        "ptq": lambda: PTQSpec(calibration_samples=32),
        "qat": lambda: QATSpec(calibration_samples=32, training=_training()),
        "kd_low_rank": lambda: KDSpec(student=LowRankStudent(energy=0.9), training=_training()),
        "kd_zoo_resnet": lambda: KDSpec(student=ZooStudent(architecture="resnet"), training=_training()),
        "function_matching": lambda: FunctionMatchingSpec(student=LowRankStudent(energy=0.9), training=_training()),
        "quantized_distillation": lambda: QuantizedDistillationSpec(training=_training()),
        "differentiable_quantization": lambda: DifferentiableQuantizationSpec(training=_training()),
        "quant_noise": lambda: QuantNoiseSpec(training=_training()),
        # min_weights 0: at toy width no layer reaches the default 1024 weights, and every layer's block plan is
        # what the sweep is after
        "ipq": lambda: IPQSpec(kmeans_iterations=2, calibration_batches=2, min_weights=0, training=_training()),
        "prune": lambda: PruneSpec(recalibrate_batches=2),
        "prune_structured": lambda: PruneSpec(kind="structured", recalibrate_batches=2),
    }


def output_cosines(model, reference, inputs: torch.Tensor) -> list[float]:
    """Mean cosine to the upload of every output, the ones the job's metric does not read included (a second head
    that a stage breaks would otherwise go unseen)."""
    with torch.no_grad():
        got, want = model(inputs), reference(inputs)
    got, want = (list(o) if isinstance(o, (tuple, list)) else [o] for o in (got, want))
    # an output the stage's model no longer returns counts as lost (cosine 0)
    return [round(F.cosine_similarity(g.flatten(1).float(), w.flatten(1).float()).mean().item(), 4)
            if g is not None else 0.0 for g, w in zip(got + [None] * (len(want) - len(got)), want)]


def run_case(case_name: str, methods: list[str], directory: Path, dtype: torch.dtype = torch.float32,
             decomposed: bool = False) -> list[dict]:
    case = build_case(case_name, samples=240)
    model_path, dataset_path = export_case(case, directory, dtype, decomposed)
    probe = torch.from_numpy(case.inputs[-64:])
    probe = probe.to(dtype) if probe.is_floating_point() else probe
    rows = []
    for method in methods:
        started = time.monotonic()
        row = {"case": case_name, "method": method}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = run_pipeline(model_path, dataset_path, [method_specs()[method]()],
                                      EvaluationSpec(latency=False, max_samples=96), RunContext(),
                                      directory / method)
        except Exception as exc:  # a failing method is a cell of the table, not the end of the sweep
            first_line = (str(exc).splitlines() or [""])[0]
            row |= {"status": "error", "error": f"{type(exc).__name__}: {first_line}"[:240]}
        else:
            final = result.final
            drop = final.get("metric_drop")
            warned = final.get("warnings") or []
            cosines = output_cosines(result.stages[-1].model, case.model, probe)
            silent = not warned and ((drop is not None and drop > COLLAPSE_POINTS) or min(cosines) < COLLAPSE_COSINE)
            row |= {"status": "COLLAPSE" if silent else "ok", "metric": final.get("metric"), "metric_drop": drop,
                    "output_cosines": cosines, "size_ratio": final.get("compression_ratio"), "warnings": warned}
        row["seconds"] = round(time.monotonic() - started, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| case | method | result | s | metric drop (points) | output cosines | size ratio |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["status"] == "error":
            lines.append(f"| {row['case']} | {row['method']} | {row['error']} | {row['seconds']} | | | |")
            continue
        drop = "" if row["metric_drop"] is None else f"{row['metric_drop']:.1f} ({row['metric']})"
        ratio = "" if row["size_ratio"] is None else f"{row['size_ratio']:.2f}"
        status = row["status"] + (" (warned)" if row["warnings"] else "")
        cosines = ", ".join(f"{cosine:.3f}" for cosine in row["output_cosines"])
        lines.append(f"| {row['case']} | {row['method']} | {status} | {row['seconds']} | {drop} | {cosines} | "
                     f"{ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", help=f"comma-separated subset of {', '.join(CASE_NAMES)}")
    parser.add_argument("--methods", help=f"comma-separated subset of {', '.join(method_specs())}")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16", "float64"], default="float32",
                        help="what the uploads' weights are stored in")
    parser.add_argument("--decomposed", action="store_true",
                        help="lower each upload to core ATen (`run_decompositions()`) before the job")
    args = parser.parse_args()
    cases = args.cases.split(",") if args.cases else list(CASE_NAMES)
    methods = args.methods.split(",") if args.methods else list(method_specs())
    started, rows = time.monotonic(), []
    with tempfile.TemporaryDirectory() as directory:
        for name in cases:
            (Path(directory) / name).mkdir()
            rows += run_case(name, methods, Path(directory) / name, getattr(torch, args.dtype), args.decomposed)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = ("" if args.dtype == "float32" else f"_{args.dtype}") + ("_decomposed" if args.decomposed else "")
    (RESULTS / f"cnn_shape_sweep{suffix}.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))
    failed = sum(row["status"] != "ok" for row in rows)
    print(f"\n{len(rows) - failed}/{len(rows)} ok; {time.monotonic() - started:.0f} s; load average at the end "
          f"{os.getloadavg()}")


if __name__ == "__main__":
    main()
