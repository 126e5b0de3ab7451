"""Issue 3 benchmark, PTQ rows: a ResNet-style CNN on Fashion-MNIST, fp32 against int8 with each activation
observer, the int8 x86 pt2e recipe, and low-bit rows (W4A8, W4A4, W2A8). Columns: top-1 on the test set, bytes
actually written for each deployable, and compression ratio against the fp32 parameters.

    .venv/bin/python -m bench.ptq.run --quick     # minutes once the model is trained and cached
    .venv/bin/python -m bench.ptq.run             # more training, the full test set

The trained fp32 model is cached under bench/results/cache/ so reruns skip training.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.common.data import fashion_mnist_subset
from compression.context import RunContext
from compression.data import Dataset
from compression.evaluate import evaluate
from compression.io import export_model, load_model, save_program
from compression.ptq.apply import apply_ptq
from compression.quant.general import apply_general_ptq
from compression.specs.ptq import ActivationQuantSpec, PTQSpec, WeightQuantSpec
from compression.task import Task
from compression.zoo import resnet

RESULTS = Path(__file__).resolve().parents[1] / "results"


def train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = epochs * (len(x) // 128)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps)
    model.train()
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(order) - 127, 128):
            index = order[start:start + 128]
            loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x[index])), torch.from_numpy(y[index]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def trained_model(quick: bool, x: np.ndarray, y: np.ndarray) -> torch.nn.Module:
    cache = RESULTS / "cache" / f"fashion_resnet_{'quick' if quick else 'full'}.pt2"
    if not cache.exists():
        model = resnet(base_blocks=1) if quick else resnet()
        samples, epochs = (12_000, 2) if quick else (60_000, 3)
        started = time.monotonic()
        train(model, x[:samples], y[:samples], epochs)
        print(f"trained in {time.monotonic() - started:.0f} s", file=sys.stderr)
        save_program(export_model(model, (torch.from_numpy(x[:4]),)), cache)
    return load_model(cache)


def rows() -> list[tuple[str, PTQSpec, Callable]]:
    """(label, spec, implementation): the default spec is the x86 pt2e recipe; the W8A8 observer rows run the
    general path even where their spec equals the default, so every observer is measured the same way."""
    observers = ["minmax", "moving_average_minmax", "percentile", "mse", "kl"]
    low_bit = [
        ("W4A8 per-channel mse", PTQSpec(weights=WeightQuantSpec(bits=4, range="mse"))),
        ("W4A8 g32 mse + bias corr.", PTQSpec(weights=WeightQuantSpec(bits=4, granularity="per_group", group_size=32,
                                                                       range="mse"), bias_correction=True)),
        ("W4A4 g32 mse, A mse", PTQSpec(weights=WeightQuantSpec(bits=4, granularity="per_group", group_size=32,
                                                                range="mse"),
                                        activations=ActivationQuantSpec(bits=4, observer="mse"))),
        ("W2A8 g16 mse", PTQSpec(weights=WeightQuantSpec(bits=2, granularity="per_group", group_size=16,
                                                         range="mse"))),
        ("W2A8 g16 mse, budget 2 pts", PTQSpec(weights=WeightQuantSpec(bits=2, granularity="per_group",
                                                                       group_size=16, range="mse"),
                                               max_metric_drop=2.0, budget_allows_float=False)),
        ("FP8 E4M3 weights only", PTQSpec(weights=WeightQuantSpec(dtype="fp8_e4m3"), activations=None)),
    ]
    return ([("W8A8 x86 pt2e (default)", PTQSpec(), apply_ptq)]
            + [(f"W8A8 {name}", PTQSpec(activations=ActivationQuantSpec(observer=name), export_onnx=name == "minmax"),
                apply_general_ptq) for name in observers]
            + [(name, spec, apply_general_ptq) for name, spec in low_bit])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller model, less training, 2,000 test images")
    args = parser.parse_args()
    arrays = fashion_mnist_subset(None, 2000 if args.quick else None, shuffle=False, eval_split="test")
    x_train, y_train, x_test, y_test = (arrays[name] for name in ("train.x", "train.y", "test.x", "test.y"))
    model = trained_model(args.quick, x_train, y_train)
    # Calibration draws from train; the budget search and sensitivity use a slice of train held out from
    # calibration ("val"), never the test images reported below.
    dataset = Dataset.from_arrays({"train.x": x_train[:5000], "train.y": y_train[:5000],
                                   "val.x": x_train[-2000:], "val.y": y_train[-2000:],
                                   "test.x": x_test, "test.y": y_test}, ["x"])
    fp32_bytes = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    fp32_top1 = 100 * evaluate(model, dataset.split("test"))["accuracy"]
    table = [{"config": "fp32", "top1": round(fp32_top1, 2), "artifact": "parameters", "size_bytes": fp32_bytes,
              "compression_ratio": 1.0, "time_s": 0.0}]
    for name, spec, implementation in rows():
        with tempfile.TemporaryDirectory() as workdir:
            task = Task(dataset, model, (torch.from_numpy(x_train[:4]),), Path(workdir))
            started = time.monotonic()
            try:
                result = implementation(spec, model, task, RunContext())
            except Exception as error:  # one broken recipe must not hide the other rows
                table.append({"config": name, "top1": None, "artifact": f"failed: {type(error).__name__}: "
                              f"{str(error)[:80]}", "size_bytes": None, "compression_ratio": None, "time_s": None})
                print(f"{name}: failed ({error})", file=sys.stderr)
                continue
            elapsed = time.monotonic() - started
            top1 = 100 * evaluate(result.model, dataset.split("test"))["accuracy"]
            for artifact in result.artifacts:
                size = artifact.size_bytes
                table.append({"config": name, "top1": round(top1, 2), "artifact": artifact.name, "size_bytes": size,
                              "compression_ratio": round(fp32_bytes / size, 2), "time_s": round(elapsed, 1),
                              "budget": result.metrics.get("budget", {}).get("chosen")})
        print(f"{name}: {top1:.2f} ({elapsed:.0f} s)", file=sys.stderr)
    print_table(table, args.quick)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"ptq{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps({"quick": args.quick, "fp32_parameter_bytes": fp32_bytes, "rows": table}, indent=1))
    print(f"\nwritten {out}")


def print_table(table: list[dict], quick: bool) -> None:
    print(f"\nFashion-MNIST ResNet PTQ ({'quick' if quick else 'full'}; top-1 on "
          f"{'2,000' if quick else '10,000'} test images)\n")
    print("| config | top-1 % | artifact | bytes | ratio vs fp32 | PTQ time s |")
    print("|---|---:|---|---:|---:|---:|")
    show = lambda value, spec: "-" if value is None else format(value, spec)
    for row in table:
        print(f"| {row['config']} | {show(row['top1'], '.2f')} | {row['artifact']} | {show(row['size_bytes'], ',')} | "
              f"{show(row['compression_ratio'], '.2f')} | {show(row['time_s'], '.1f')} |")


if __name__ == "__main__":
    main()
