"""Does int8 PTQ really make a model faster on this CPU? fp32 vs int8, eager and compiled, batch 1 and 32.

A small CNN is trained briefly on Fashion-MNIST, exported, and quantized by the library's `ptq` stage; both
`.pt2` files are then loaded back as a user would and timed the same way. The CPU is shared, so the two models
are timed in alternation, round after round until the spread is under 10 % or the budget ends (compression.measure).

    python -m bench.ptq_speed [--steps 150] [--budget-s 5] [--threads N]

Prints a markdown table and writes bench/results/ptq_speed_<threads>threads.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torch._inductor.config as inductor_config
import torch.nn.functional as F

from bench.datasets import fashion_mnist
from compression import zoo
from compression.context import RunContext
from compression.data import Dataset
from compression.evaluate import evaluate
from compression.io import export_model, load_model, save_program
from compression.measure import compare_latency
from compression.ptq import apply_ptq
from compression.specs.ptq import PTQSpec
from compression.task import Task

RESULTS_DIR = Path(__file__).parent / "results"
BATCH_SIZES = (1, 32)


def train(arrays: dict, steps: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = zoo.build("small_cnn", image_size=28, width=32, hidden=128).train()
    images, labels = torch.from_numpy(arrays["train.x"]), torch.from_numpy(arrays["train.y"])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, len(images), (128,), generator=generator)
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def compiled_accuracy(model: torch.nn.Module, split, samples: int, batch_size: int = 32) -> float:
    """Top-1 accuracy of the model run the way it is timed (compiled, frozen, static batch of 32): this is
    what checks that inductor's int8 lowering computes what the Q/DQ graph means."""
    samples -= samples % batch_size  # full batches only: one static shape, no recompilation
    correct = 0
    with torch.no_grad(), inductor_config.patch(freezing=True):
        compiled = torch.compile(model, dynamic=False)
        for batch in split.batches(batch_size, limit=samples):
            correct += (compiled(*batch.inputs).argmax(-1) == batch.labels).sum().item()
    return correct / samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps of the fp32 CNN")
    parser.add_argument("--budget-s", type=float, default=5.0,
                        help="time budget per batch size for the alternating rounds (compression.measure)")
    parser.add_argument("--eval-samples", type=int, default=5_000)
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads (default: torch's choice); 1 is steadier on a busy machine")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    arrays = fashion_mnist()
    dataset = Dataset.from_arrays(arrays, ["input"])
    started = time.monotonic()
    trained = train(arrays, args.steps, args.seed)
    train_s = time.monotonic() - started

    workdir = Path(tempfile.mkdtemp(prefix="ptq-speed-"))
    example = dataset.split("test").head(8).inputs
    fp32_path = save_program(export_model(trained, example), workdir / "fp32.pt2")
    task = Task(dataset, load_model(fp32_path), example, workdir, train_split="train", eval_split="test")
    stage = apply_ptq(PTQSpec(calibration_samples=512), load_model(fp32_path), task, RunContext(seed=args.seed))
    int8_path = stage.artifacts[0].path
    models = {"fp32": load_model(fp32_path), "int8": load_model(int8_path)}

    test = dataset.split("test")
    quality = {name: evaluate(model, test, max_samples=args.eval_samples)["accuracy"]
               for name, model in models.items()}
    latency: dict[str, dict[str, float]] = {}
    measure_s = {}
    for mode, compile in (("eager", False), ("compiled", True)):
        started = time.monotonic()
        measured = compare_latency(models, example, list(BATCH_SIZES), compile=compile, budget_s=args.budget_s)
        measure_s[mode] = round(time.monotonic() - started, 1)
        for batch_size in BATCH_SIZES:
            latency[f"{mode} b{batch_size}"] = {name: measured[name][batch_size] for name in models}
    compiled_quality = {name: compiled_accuracy(model, test, args.eval_samples) for name, model in models.items()}

    sizes = {"fp32": fp32_path.stat().st_size, "int8": int8_path.stat().st_size}
    report = {
        "model": "small_cnn(width=32, hidden=128) on Fashion-MNIST 28x28", "train_steps": args.steps,
        "train_s": round(train_s, 1), "accuracy": quality, "eval_samples": min(args.eval_samples, len(test)),
        "compiled_accuracy": compiled_quality,
        "size_bytes": sizes, "latency_ms": latency, "measure_s": measure_s,
        "speedup_int8_vs_fp32": {key: values["fp32"] / values["int8"] for key, values in latency.items()},
        "ptq_metrics": stage.metrics,
        "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                        "processor": platform.processor() or platform.machine(),
                        "load_average_1m": os.getloadavg()[0]},
    }
    results = RESULTS_DIR / f"ptq_speed_{torch.get_num_threads()}threads.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"\nJSON: {results}")


def markdown(report: dict) -> str:
    keys = list(report["latency_ms"])
    lines = ["| model | size (bytes) | test accuracy (eager / compiled) | "
             + " | ".join(f"{k} (ms)" for k in keys) + " |", "|---" * (3 + len(keys)) + "|"]
    accuracy, compiled = report["accuracy"], report["compiled_accuracy"]
    for name in ("fp32", "int8"):
        cells = [f"{report['latency_ms'][k][name]:.3f}" for k in keys]
        lines.append(f"| {name} | {report['size_bytes'][name]:,} | {accuracy[name]:.4f} / {compiled[name]:.4f} | "
                     + " | ".join(cells) + " |")
    ratio = report["size_bytes"]["fp32"] / report["size_bytes"]["int8"]
    speedups = [f"{report['speedup_int8_vs_fp32'][k]:.2f}x" for k in keys]
    lines.append(f"| int8 vs fp32 | {ratio:.2f}x smaller | {accuracy['int8'] - accuracy['fp32']:+.4f} / "
                 f"{compiled['int8'] - compiled['fp32']:+.4f} | " + " | ".join(speedups) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
