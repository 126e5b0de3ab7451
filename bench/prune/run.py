"""Issue 6 benchmark, pruning rows: a ResNet-style CNN (compression.zoo "resnet") trained on Fashion-MNIST, then
pruned by `apply_prune` with short finetuning. Unstructured (global magnitude) at 50/75/90% and structured (L2
channel norm, channels really removed) at 25/50%, plus for contrast: 90% before finetuning, LAMP (layer-adaptive
global magnitude) at 90%, and data-free SynFlow at 90%. Columns: top-1 on the test set, parameters (nonzero for
unstructured), bytes actually written (.pt2, and the bitmask + values safetensors for unstructured), eager CPU
latency at batch 1 and 32 and its ratio to the dense model.

    .venv/bin/python -m bench.prune.run --quick    # a few minutes on 2 shared cores
    .venv/bin/python -m bench.prune.run            # wider model, longer training, the full test set

The trained dense model is cached under bench/results/cache/ so reruns skip its training. Unstructured sparsity
does not make dense CPU kernels faster (the zeros are still multiplied); only structured pruning does, which the
latency columns show.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.common.data import fashion_mnist_subset
from bench.common.models import trained_model
from bench.common.report import write_results
from compression.context import RunContext
from compression.data import Dataset
from compression.evaluate import evaluate
from compression.io import export_model, load_model, save_program
from compression.measure import time_in_alternation
from compression.prune import apply_prune
from compression.specs.prune import PruneSpec
from compression.specs.training import TrainingSpec
from compression.task import Task
from compression.zoo import build

SETTINGS = {
    True: {"width": 8, "blocks": 1, "train_steps": 600, "finetune_steps": 150, "test_samples": 2000},
    False: {"width": 16, "blocks": 2, "train_steps": 3000, "finetune_steps": 600, "test_samples": 10000},
}


def dense_model(settings: dict, dataset: Dataset, example: tuple[torch.Tensor, ...]) -> nn.Module:
    name = f"prune_resnet_w{settings['width']}_b{settings['blocks']}_{settings['train_steps']}.pt2"
    return trained_model(name, lambda: build("resnet", base_width=settings["width"], base_blocks=settings["blocks"]),
                         Task(dataset, nn.Identity(), example, Path(tempfile.gettempdir())),
                         TrainingSpec(steps=settings["train_steps"], batch_size=64, lr=3e-3, warmup_steps=50))


def rows(finetune_steps: int) -> list[tuple[str, PruneSpec]]:
    finetune = {"steps": finetune_steps, "batch_size": 64, "lr": 1e-3}
    return [
        ("unstructured 50%", PruneSpec(sparsity=0.5, finetune=finetune)),
        ("unstructured 75%", PruneSpec(sparsity=0.75, finetune=finetune)),
        ("unstructured 90%, no finetune", PruneSpec(sparsity=0.9)),
        ("unstructured 90%", PruneSpec(sparsity=0.9, finetune=finetune)),
        ("unstructured 90%, LAMP, no finetune", PruneSpec(sparsity=0.9, criterion="lamp")),
        ("unstructured 90%, LAMP", PruneSpec(sparsity=0.9, criterion="lamp", finetune=finetune)),
        ("SynFlow 90% (data-free) + finetune", PruneSpec(sparsity=0.9, criterion="synflow", synflow_iterations=50,
                                                         finetune=finetune)),
        ("structured 25% channels", PruneSpec(kind="structured", sparsity=0.25, finetune=finetune)),
        ("structured 50% channels", PruneSpec(kind="structured", sparsity=0.5, finetune=finetune)),
    ]


def measure(name: str, model: nn.Module, pt2: Path, sparse: Path | None, val, metrics: dict) -> dict:
    nonzero = sum(int(p.count_nonzero()) for p in model.parameters())
    return {"method": name, "accuracy": evaluate(model, val)["accuracy"], "nonzero_parameters": nonzero,
            "pt2_bytes": pt2.stat().st_size, "sparse_bytes": sparse.stat().st_size if sparse else None,
            "sparsity": metrics.get("sparsity"), "collapsed_layers": metrics.get("collapsed_layers"),
            "parameter_reduction": metrics.get("parameter_reduction")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model, short training, 2000 test images")
    args = parser.parse_args()
    settings = SETTINGS[args.quick]
    torch.manual_seed(0)
    arrays = fashion_mnist_subset(None, settings["test_samples"], shuffle=False)
    dataset = Dataset.from_arrays(arrays, ["x"])
    val = dataset.split("val")
    example = (torch.from_numpy(arrays["val.x"][:8]),)
    dense = dense_model(settings, dataset, example)
    table = []
    with tempfile.TemporaryDirectory() as scratch:
        dense_path = save_program(export_model(dense, example), Path(scratch) / "dense.pt2")
        table.append(measure("dense", dense, dense_path, None, val, {}))
        models = [dense]
        for index, (name, spec) in enumerate(rows(settings["finetune_steps"])):
            started = time.monotonic()
            task = Task(dataset, dense, example, Path(scratch) / str(index))
            result = apply_prune(spec, load_model(dense_path), task, RunContext())
            paths = {artifact.kind: artifact.path for artifact in result.artifacts}
            row = measure(name, result.model, paths["model.pt2"], paths.get("sparse.safetensors"), val,
                          result.metrics)
            models.append(result.model)
            row["stage_seconds"] = round(time.monotonic() - started, 1)
            table.append(row)
            print(f"{name}: {row}", file=sys.stderr)
    # All models in alternation, round after round, until each spread is small or the budget ends.
    timings = time_in_alternation({str(index): model for index, model in enumerate(models)}, example, [1, 32],
                                  budget_s=10.0)
    for index, row in enumerate(table):
        for batch, timing in timings[str(index)].items():
            row[f"latency_ms_b{batch}"], row[f"latency_spread_b{batch}"] = round(timing.median_ms, 3), timing.spread
            if not timing.reliable:
                row["latency_unreliable"] = timing.reason
    for row in table:
        row["latency_ratio_b1"] = round(row["latency_ms_b1"] / table[0]["latency_ms_b1"], 3)
        row["latency_ratio_b32"] = round(row["latency_ms_b32"] / table[0]["latency_ms_b32"], 3)
    output = write_results("prune_quick.json" if args.quick else "prune.json", {
        "settings": settings, "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": table})
    print_table(table, settings)
    print(f"\nwritten to {output}")


def print_table(table: list[dict], settings: dict) -> None:
    print(f"\nResNet (width {settings['width']}, {settings['blocks']} block(s)/stage) on Fashion-MNIST, "
          f"{settings['test_samples']} test images, finetune {settings['finetune_steps']} steps; eager CPU latency "
          f"(median of rounds in alternation, compression.measure), {torch.get_num_threads()} threads\n")
    print("| method | top-1 | nonzero params | .pt2 bytes | sparse bytes | ms b1 | ms b32 | b32 vs dense |")
    print("|---|---|---|---|---|---|---|---|")
    for row in table:
        sparse = f"{row['sparse_bytes']:,}" if row["sparse_bytes"] else "-"
        print(f"| {row['method']} | {row['accuracy']:.4f} | {row['nonzero_parameters']:,} | {row['pt2_bytes']:,} | "
              f"{sparse} | {row['latency_ms_b1']:.2f} | {row['latency_ms_b32']:.2f} | "
              f"{row['latency_ratio_b32']:.2f}x |")
    unreliable = [row for row in table if row.get("latency_unreliable")]
    if unreliable:
        print(f"\nLatency figures NOT reliable for {len(unreliable)} of {len(table)} rows (e.g. "
              f"{unreliable[0]['latency_unreliable']}): do not quote them.")


if __name__ == "__main__":
    main()
