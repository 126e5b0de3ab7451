"""Issue 4 benchmark on Fashion-MNIST: knowledge distillation and quantized distillation.

Part 1, students: a ResNet-style teacher and a ResNet student with under 1/4 of its parameters, trained for the
same number of steps five ways: alone on the hard labels, Hinton KD, function matching with a consistent teacher
(same crop/flip/mixup view for both; and without mixup), and function matching's weak baseline (teacher outputs
fixed per example).

Part 2, every conv/linear weight at 4 and 2 bits, activations in float: post-training rounding (PTQ),
quantization-aware training on the labels (QAT, LSQ), quantized distillation (these three uniform, one range per
output channel) and differentiable quantization (one learned 2^b-point codebook per tensor), the trained ones for
the same number of steps. Sizes are bytes of the files written (packed weights + compressed graph).

    .venv/bin/python -m bench.distill.run --quick    # 2-8 minutes on 2 shared cores, depending on load
    .venv/bin/python -m bench.distill.run            # full data, longer schedules

The trained teacher is cached under bench/results/cache/ so reruns skip its training.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch

from bench.common.data import fashion_mnist_subset, make_task
from bench.common.models import CACHE, cross_entropy, trained_model
from bench.common.report import accuracy, markdown, write_results
from compression import zoo
from compression.context import RunContext
from compression.distill.function_matching import apply_function_matching
from compression.distill.kd import apply_kd
from compression.distill.quantized import apply_differentiable_quantization, apply_quantized_distillation
from compression.distill.weight_quant import bucketed_format, quantizable_weights
from compression.evaluate import evaluate
from compression.qat.apply import apply_qat
from compression.quant.weights import quantize_weight
from compression.specs.distill import (
    DifferentiableQuantizationSpec,
    FunctionMatchingSpec,
    KDSpec,
    QuantizedDistillationSpec,
)
from compression.specs.qat import QATSpec
from compression.specs.training import TrainingSpec
from compression.students import parameter_count
from compression.task import Task
from compression.training import train

TEACHER = {"width_mult": 1.0, "depth_mult": 0.5}
STUDENT = {"kind": "zoo", "architecture": "resnet", "width": 0.45, "depth": 0.5}
# A bucket longer than any row makes Polino's bucketing per output channel, the granularity QAT uses here too.
PER_CHANNEL_BUCKET = 65536

SETTINGS = {
    # The teacher gets the longest schedule: a student trained alone must not catch up with it.
    "quick": {"train": 10_000, "test": 2_000, "teacher_steps": 1500, "student_steps": 250, "quant_steps": 100},
    "full": {"train": 60_000, "test": 10_000, "teacher_steps": 6000, "student_steps": 2000, "quant_steps": 800},
}


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
    arrays = fashion_mnist_subset(settings["train"], settings["test"])
    name = f"distill_teacher_{mode}_{settings['teacher_steps']}.pt2"
    with tempfile.TemporaryDirectory() as workdir:
        started = time.monotonic()
        teacher = trained_model(name, lambda: zoo.build("resnet", in_channels=1, num_classes=10, **TEACHER),
                                make_task(arrays, Path(workdir)),
                                TrainingSpec(steps=settings["teacher_steps"], batch_size=128, lr=3e-3))
        task = make_task(arrays, Path(workdir), teacher)
        teacher_row = {"accuracy": accuracy(teacher, task), "parameters": parameter_count(teacher),
                       "float32_bytes": (CACHE / name).stat().st_size}
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
    overridden = settings != SETTINGS[mode] or parts != {"students", "quantized"}
    suffix = f"_s{settings['student_steps']}_q{settings['quant_steps']}_{'+'.join(sorted(parts))}" if overridden else ""
    out = write_results(f"distill_{mode}{suffix}.json", {
        "mode": mode, "settings": settings, "teacher": teacher_row, "students": students, "quantized": quantized,
        "total_seconds": total})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
