"""Issue 4 benchmark on Fashion-MNIST: knowledge distillation and quantized distillation.

Part 1, students: a ResNet-style teacher and a ResNet student with under 1/4 of its parameters, trained for the
same number of steps five ways: alone on the hard labels, Hinton KD, function matching with a consistent teacher
(same crop/flip/mixup view for both; and without mixup), and function matching's weak baseline (teacher outputs
fixed per example).

Part 2, every conv/linear weight at 4 and 2 bits, activations in float: post-training rounding (PTQ),
quantization-aware training on the labels (QAT, LSQ), quantized distillation (these three uniform, one range per
output channel) and differentiable quantization (one learned 2^b-point codebook per tensor), the trained ones for
the same number of steps. Sizes are bytes of the files written (packed weights + compressed graph).

    .venv/bin/python bench/distill/run.py --quick    # 2-8 minutes on 2 shared cores, depending on load
    .venv/bin/python bench/distill/run.py            # full data, longer schedules

The trained teacher is cached under bench/results/cache/ so reruns skip its training.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.datasets import fashion_mnist  # noqa: E402
from compression import zoo  # noqa: E402
from compression.context import RunContext  # noqa: E402
from compression.data import Dataset  # noqa: E402
from compression.distill.function_matching import apply_function_matching  # noqa: E402
from compression.distill.kd import apply_kd  # noqa: E402
from compression.distill.quantized import apply_differentiable_quantization, apply_quantized_distillation  # noqa
from compression.distill.weight_quant import bucketed_format, quantizable_weights  # noqa: E402
from compression.evaluate import evaluate, output_tensor  # noqa: E402
from compression.io import export_model, load_model, save_program  # noqa: E402
from compression.modes import eval_mode  # noqa: E402
from compression.qat.apply import apply_qat  # noqa: E402
from compression.quant.weights import quantize_weight  # noqa: E402
from compression.specs.distill import (  # noqa: E402
    DifferentiableQuantizationSpec,
    FunctionMatchingSpec,
    KDSpec,
    QuantizedDistillationSpec,
)
from compression.specs.qat import QATSpec  # noqa: E402
from compression.specs.training import TrainingSpec  # noqa: E402
from compression.students import parameter_count  # noqa: E402
from compression.task import Task  # noqa: E402
from compression.training import train  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
TEACHER = {"width_mult": 1.0, "depth_mult": 0.5}
STUDENT = {"kind": "zoo", "architecture": "resnet", "width": 0.45, "depth": 0.5}
# A bucket longer than any row makes Polino's bucketing per output channel, the granularity QAT uses here too.
PER_CHANNEL_BUCKET = 65536

SETTINGS = {
    # The teacher gets the longest schedule: a student trained alone must not catch up with it.
    "quick": {"train": 10_000, "test": 2_000, "teacher_steps": 1500, "student_steps": 250, "quant_steps": 100},
    "full": {"train": 60_000, "test": 10_000, "teacher_steps": 6000, "student_steps": 2000, "quant_steps": 800},
}


def make_task(arrays: dict, workdir: Path, reference: torch.nn.Module | None) -> Task:
    dataset = Dataset.from_arrays(arrays, ["x"])
    return Task(dataset=dataset, reference=reference, example_inputs=(torch.from_numpy(arrays["train.x"][:8]),),
                workdir=workdir)


def cross_entropy(model, batch, step):
    return F.cross_entropy(output_tensor(model(*batch.inputs)), batch.labels)


def train_teacher(task: Task, steps: int, cache: Path) -> torch.nn.Module:
    """The exported teacher, as the service hands it to a method (trained once, then cached)."""
    if cache.exists():
        return load_model(cache)
    torch.manual_seed(0)
    model = zoo.build("resnet", in_channels=1, num_classes=10, **TEACHER)
    train(model, cross_entropy, TrainingSpec(steps=steps, batch_size=128, lr=3e-3), task, RunContext())
    save_program(export_model(eval_mode(model), task.example_inputs), cache)
    return load_model(cache)


def accuracy(model: torch.nn.Module, task: Task) -> float:
    return round(evaluate(model, task.dataset.split("val"))["accuracy"], 4)


def student_rows(teacher, task: Task, steps: int) -> list[dict]:
    training = TrainingSpec(steps=steps, batch_size=64, lr=3e-3)
    rows = []

    torch.manual_seed(0)
    alone = zoo.build("resnet", in_channels=1, num_classes=10, width_mult=STUDENT["width"],
                      depth_mult=STUDENT["depth"])
    started = time.monotonic()
    train(alone, cross_entropy, training, task, RunContext())
    rows.append({"method": "student alone (labels)", "accuracy": accuracy(alone, task),
                 "agreement": round(evaluate(alone, task.dataset.split("val"), reference=teacher)["top1_agreement"], 4),
                 "parameters": parameter_count(alone), "seconds": round(time.monotonic() - started, 1)})
    runs = [
        ("KD (T=4, alpha=0.5)", apply_kd, KDSpec(student=STUDENT, temperature=4.0, alpha=0.5, training=training)),
        ("function matching, consistent", apply_function_matching,
         FunctionMatchingSpec(student=STUDENT, teacher_targets="consistent", training=training)),
        ("function matching, consistent, no mixup", apply_function_matching,
         FunctionMatchingSpec(student=STUDENT, teacher_targets="consistent", augment={"mixup_alpha": 0.0},
                              training=training)),
        ("function matching, fixed teacher", apply_function_matching,
         FunctionMatchingSpec(student=STUDENT, teacher_targets="fixed", training=training)),
    ]
    for name, apply, spec in runs:
        torch.manual_seed(0)  # the same student initialisation for every method
        started = time.monotonic()
        result = apply(spec, teacher, task, RunContext())
        rows.append({"method": name, "accuracy": round(result.metrics["student"]["accuracy"], 4),
                     "agreement": round(result.metrics["student"]["top1_agreement"], 4),
                     "parameters": result.metrics["student_parameters"],
                     "seconds": round(time.monotonic() - started, 1)})
    return rows


def rounded(teacher: torch.nn.Module, bits: int) -> torch.nn.Module:
    """Post-training rounding of every weight, in the format quantized distillation trains with."""
    model = copy.deepcopy(teacher)
    for name in quantizable_weights(model, []):
        owner, _, leaf = name.rpartition(".")
        weight = getattr(model.get_submodule(owner), leaf)
        weight.data.copy_(quantize_weight(weight, bucketed_format(bits, PER_CHANNEL_BUCKET, weight)).dequantized)
    return model


def quant_rows(teacher, task: Task, steps: int) -> list[dict]:
    training = TrainingSpec(steps=steps, batch_size=64, lr=1e-3)
    rows = []
    for bits in (4, 2):
        rows.append({"bits": bits, "method": "PTQ (rounding)", "accuracy": accuracy(rounded(teacher, bits), task),
                     "bytes": None, "seconds": 0.0})
        runs = [
            ("QAT (LSQ, labels)", apply_qat, QATSpec(weight_bits=bits, activation_bits=None, quantizer="lsq",
                                                     first_last_bits=None, training=training)),
            ("quantized distillation", apply_quantized_distillation,
             QuantizedDistillationSpec(bits=bits, bucket_size=PER_CHANNEL_BUCKET, training=training)),
            ("differentiable quantization", apply_differentiable_quantization,
             DifferentiableQuantizationSpec(bits=bits, training=training)),
        ]
        for name, apply, spec in runs:
            torch.manual_seed(0)
            started = time.monotonic()
            try:
                result = apply(spec, teacher, task, RunContext())
            except Exception as error:  # one broken method must not cost the other rows; the table says why
                rows.append({"bits": bits, "method": name, "accuracy": f"failed: {type(error).__name__}: {error}",
                             "bytes": None, "seconds": round(time.monotonic() - started, 1)})
                continue
            packed = [a.size_bytes for a in result.artifacts if a.kind.startswith("packed.")]
            rows.append({"bits": bits, "method": name, "accuracy": accuracy(result.model, task),
                         "bytes": packed[0] if packed else None, "seconds": round(time.monotonic() - started, 1)})
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("" if row[c] is None else str(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k training images, 2k test, short schedules")
    parser.add_argument("--student-steps", type=int, help="override the mode's steps for part 1")
    parser.add_argument("--quant-steps", type=int, help="override the mode's steps for part 2")
    parser.add_argument("--parts", default="students,quantized", help="comma-separated subset of the two parts")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    settings = dict(SETTINGS[mode])
    for key, value in (("student_steps", args.student_steps), ("quant_steps", args.quant_steps)):
        if value is not None:
            settings[key] = value
    parts = set(args.parts.split(","))
    # Small models on shared cores: a second intra-op thread mostly spin-waits.
    torch.set_num_threads(1)
    data = fashion_mnist()
    rng = np.random.default_rng(0)
    train_index = rng.permutation(len(data["train.y"]))[:settings["train"]]
    arrays = {"train.x": data["train.x"][train_index], "train.y": data["train.y"][train_index],
              "val.x": data["test.x"][:settings["test"]], "val.y": data["test.y"][:settings["test"]]}
    cache = RESULTS / "cache" / f"distill_teacher_{mode}_{settings['teacher_steps']}.pt2"
    with tempfile.TemporaryDirectory() as workdir:
        started = time.monotonic()
        teacher = train_teacher(make_task(arrays, Path(workdir), None), settings["teacher_steps"], cache)
        task = make_task(arrays, Path(workdir), teacher)
        teacher_row = {"accuracy": accuracy(teacher, task), "parameters": parameter_count(teacher),
                       "float32_bytes": cache.stat().st_size}
        students = student_rows(teacher, task, settings["student_steps"]) if "students" in parts else []
        quantized = quant_rows(teacher, task, settings["quant_steps"]) if "quantized" in parts else []
        total = round(time.monotonic() - started, 1)
    print(f"## Distillation on Fashion-MNIST ({mode}: {settings['train']} train / {settings['test']} test images)\n")
    print(f"Teacher: ResNet {TEACHER}, {teacher_row['parameters']} parameters, accuracy {teacher_row['accuracy']}, "
          f".pt2 {teacher_row['float32_bytes']} bytes.\n")
    if students:
        print(f"### Students ({settings['student_steps']} steps each, batch 64)\n")
        print(markdown(students, ["method", "accuracy", "agreement", "parameters", "seconds"]) + "\n")
    if quantized:
        print(f"### Weights at 4 and 2 bits ({settings['quant_steps']} steps for the trained ones)\n")
        print(markdown(quantized, ["bits", "method", "accuracy", "bytes", "seconds"]) + "\n")
    print(f"Total {total} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    overridden = settings != SETTINGS[mode] or parts != {"students", "quantized"}
    suffix = f"_s{settings['student_steps']}_q{settings['quant_steps']}_{'+'.join(sorted(parts))}" if overridden else ""
    out = RESULTS / f"distill_{mode}{suffix}.json"
    out.write_text(json.dumps({"mode": mode, "settings": settings, "teacher": teacher_row, "students": students,
                               "quantized": quantized, "total_seconds": total}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
