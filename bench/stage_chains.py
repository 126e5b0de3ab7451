"""Two-stage jobs: each float method followed by each other method, on small CNN families (`bench.cnn_families`)
and tiny Hugging Face folders (`bench.hf_architecture_sweep`), in-process through the worker's pipelines with few
steps. A stage hands the next one the model it wrote (a re-exported program, a student's graph, a pruned graph),
which single-method sweeps never exercise: robustness, not quality. Each row says ok or the error and where.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.stage_chains [--cnn resnet_basic,tall_audio]
        [--hf bert:feature-extraction,llama:sequence-classification]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import traceback
from pathlib import Path

from bench.cnn_families import build_case, export_case
from bench.hf_architecture_sweep import ENCODER_METHODS, FEW_STEPS, first_line, folder_zip, text_dataset
from compression.archive.hf_folder import read_hf_folder
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.pipeline import run_pipeline
from compression.specs import EvaluationSpec, IPQSpec, KDSpec, PruneSpec, PTQSpec, QATSpec
from compression.specs.distill import DifferentiableQuantizationSpec, FunctionMatchingSpec, QuantizedDistillationSpec
from compression.specs.ipq import QuantNoiseSpec
from compression.specs.training import TrainingSpec

FEW = TrainingSpec(steps=2, batch_size=16, warmup_steps=0)
CNN_FIRST = {
    "prune": lambda: PruneSpec(recalibrate_batches=1),
    "prune_structured": lambda: PruneSpec(kind="structured", sparsity=0.3, recalibrate_batches=1),
    "kd_low_rank": lambda: KDSpec(student={"kind": "low_rank", "energy": 0.9}, training=FEW),
    "function_matching": lambda: FunctionMatchingSpec(student={"kind": "low_rank", "energy": 0.9}, training=FEW),
    "quant_noise": lambda: QuantNoiseSpec(training=FEW),
}
CNN_SECOND = CNN_FIRST | {
    "ptq": lambda: PTQSpec(calibration_samples=16), "qat": lambda: QATSpec(calibration_samples=16, training=FEW),
    "ipq": lambda: IPQSpec(kmeans_iterations=1, min_weights=0, training=FEW, num_groups=1),
    "quantized_distillation": lambda: QuantizedDistillationSpec(training=FEW),
    "differentiable_quantization": lambda: DifferentiableQuantizationSpec(training=FEW),
}
HF_FIRST = {name: ENCODER_METHODS[name] for name in ("prune", "prune_structured", "kd_layers")} | {
    "kd_low_rank": KDSpec(student={"kind": "low_rank", "energy": 0.8}, training=FEW_STEPS),
    "quant_noise": QuantNoiseSpec(training=FEW_STEPS, distillation={}),
}
HF_SECOND = {name: ENCODER_METHODS[name] for name in ("ptq", "ptq_w8", "prune_structured", "ipq", "qat", "kd_layers")}


def _row(label: str, run) -> dict:
    started = time.monotonic()
    try:
        run()
        row = {"case": label, "ok": True}
    except Exception as exc:  # noqa: BLE001 - every failure is reported and the sweep goes on
        row = {"case": label, "ok": False, "error": first_line(exc)[:200],
               "where": traceback.format_exc().splitlines()[-3].strip()[:160]}
    print(f"{label}: {'ok' if row['ok'] else row['error'] + ' | ' + row['where']} "
          f"({time.monotonic() - started:.1f} s)", flush=True)
    return row


def cnn_rows(family: str, directory: Path) -> list[dict]:
    model_path, dataset_path = export_case(build_case(family, samples=64), directory)
    evaluation = EvaluationSpec(latency=False)
    return [_row(f"{family}: {first} -> {second}",
                 lambda a=make_first, b=make_second, w=directory / f"{first}-{second}":
                 run_pipeline(model_path, dataset_path, [a(), b()], evaluation, RunContext(), w))
            for first, make_first in CNN_FIRST.items() for second, make_second in CNN_SECOND.items()]


def hf_rows(model_type: str, task: str, directory: Path) -> list[dict]:
    archive = folder_zip(model_type, task, directory)
    read_hf_folder(archive, task=task)
    dataset = text_dataset(directory, labels=task == "sequence-classification")
    evaluation = EvaluationSpec(latency=False)
    return [_row(f"{model_type} {task}: {first} -> {second}",
                 lambda a=spec_a, b=spec_b, w=directory / f"{first}-{second}":
                 run_folder_pipeline(archive, dataset, task, [a, b], evaluation, RunContext(), w))
            for first, spec_a in HF_FIRST.items() for second, spec_b in HF_SECOND.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cnn", default="resnet_basic,tall_audio")
    parser.add_argument("--hf", default="bert:feature-extraction,llama:sequence-classification")
    args = parser.parse_args()
    started, rows = time.monotonic(), []
    directory = Path(tempfile.mkdtemp(prefix="stage_chains_"))
    for family in filter(None, args.cnn.split(",")):
        rows += cnn_rows(family, directory / family)
    for case in filter(None, args.hf.split(",")):
        model_type, task = case.split(":")
        rows += hf_rows(model_type, task, directory / f"{model_type}-{task}")
    failed = [row for row in rows if not row["ok"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} ok; {time.monotonic() - started:.0f} s")
    for row in failed:
        print(f"- {row['case']}: {row['error']} ({row['where']})")


if __name__ == "__main__":
    main()
