"""Issue 3 benchmark, QAT rows: STE, LSQ, PACT and SAWB at 4/3/2 bits on Fashion-MNIST with a ResNet-style CNN.

A float ResNet is trained once (cached under bench/results/cache/), exported as the service would receive it, then
for every bit width b: plain rounding (min-max per-channel weights and calibrated min-max activations, no
training: what QAT must beat), and QAT with each quantizer preset at WbAb, the same number of steps each. The first
and last layers stay at 8 bits (the LSQ/PACT papers' convention, the service's default). Sizes are the bytes of
the packed safetensors file written.

    .venv/bin/python -m bench.qat.run --quick    # 10k train / 2k test images, 100 QAT steps: ~5 min on 2 busy
                                                 # cores (+2 min the first time, to train the float model)
    .venv/bin/python -m bench.qat.run            # full data, 800 QAT steps: about an hour
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from bench.common.data import fashion_mnist_subset, make_task
from bench.common.models import CACHE, trained_model
from bench.common.report import accuracy, markdown, write_results
from compression import zoo
from compression.context import RunContext
from compression.modes import eval_mode
from compression.qat.apply import apply_qat
from compression.qat.prepare import calibrate, prepare_qat
from compression.specs.qat import QATSpec
from compression.specs.training import TrainingSpec
from compression.task import Task

ARCHITECTURE = {"width_mult": 1.0, "depth_mult": 0.5}
SETTINGS = {
    "quick": {"train": 10_000, "test": 2_000, "float_steps": 400, "qat_steps": 100, "bits": [4, 3, 2],
              "quantizers": ["ste", "lsq", "pact", "sawb"]},
    "full": {"train": 60_000, "test": 10_000, "float_steps": 3000, "qat_steps": 800, "bits": [4, 3, 2],
             "quantizers": ["ste", "lsq", "pact", "sawb"]},
}


def rounding_row(model, task: Task, bits: int) -> dict:
    started = time.monotonic()
    gm, layers = prepare_qat(model, task.example_inputs, weight_bits=bits, activation_bits=bits,
                             weight_quantizer="ste", activation_quantizer="ste", first_last_bits=8)
    eval_mode(gm)
    calibrate(gm, layers, [b.inputs for b in task.dataset.split("train").batches(128, limit=256)])
    return {"bits": bits, "method": "rounding (no training)", "accuracy": accuracy(gm, task),
            "bytes": None, "seconds": round(time.monotonic() - started, 1)}


def qat_row(model, task: Task, bits: int, quantizer: str, steps: int) -> dict:
    spec = QATSpec(quantizer=quantizer, weight_bits=bits, activation_bits=bits, first_last_bits=8,
                   freeze_bn_after=steps * 3 // 4,
                   training=TrainingSpec(steps=steps, batch_size=64, lr=5e-4, warmup_steps=steps // 10))
    started = time.monotonic()
    result = apply_qat(spec, model, task, RunContext())
    packed = next((a for a in result.artifacts if a.kind == "packed.safetensors"), None)
    weight_kind, activation_kind = spec.quantizers
    return {"bits": bits, "method": f"QAT {quantizer} (weights {weight_kind}, activations {activation_kind})",
            "accuracy": round(result.metrics["after"]["accuracy"], 4),
            "bytes": packed.size_bytes if packed else None, "seconds": round(time.monotonic() - started, 1),
            "pact_fallback_to_lsq": result.metrics["pact_fallback_to_lsq"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10k training images, 2k test, short schedules")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    settings = SETTINGS[mode]
    # Small models on shared cores: a second intra-op thread mostly spin-waits.
    torch.set_num_threads(1)
    arrays = fashion_mnist_subset(settings["train"], settings["test"])
    name = f"qat_resnet_{mode}.pt2"
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as workdir:
        task = make_task(arrays, Path(workdir))
        model = trained_model(name, lambda: zoo.build("resnet", in_channels=1, num_classes=10, **ARCHITECTURE), task,
                              TrainingSpec(steps=settings["float_steps"], batch_size=128, lr=3e-3))
        task.reference = model
        float_row = {"accuracy": accuracy(model, task),
                     "float32_pt2_bytes": (CACHE / name).stat().st_size}
        rows = []
        for bits in settings["bits"]:
            rows.append(rounding_row(model, task, bits))
            for quantizer in settings["quantizers"]:
                rows.append(qat_row(model, task, bits, quantizer, settings["qat_steps"]))
                print(rows[-1], flush=True)
    total = round(time.monotonic() - started, 1)
    print(f"\n## QAT on Fashion-MNIST ({mode}: {settings['train']} train / {settings['test']} test images)\n")
    print(f"Float ResNet {ARCHITECTURE}: accuracy {float_row['accuracy']}, .pt2 {float_row['float32_pt2_bytes']} "
          f"bytes. QAT: {settings['qat_steps']} steps, batch 64, Adam 5e-4, first/last layer 8 bit.\n")
    print(markdown(rows, ["bits", "method", "accuracy", "bytes", "seconds"]))
    print(f"\nTotal {total} s")
    out = write_results(f"qat_{mode}.json", {"mode": mode, "settings": settings, "float": float_row, "rows": rows,
                                             "total_seconds": total})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
