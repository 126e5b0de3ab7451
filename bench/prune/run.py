"""Issue 6 benchmark, pruning rows: a ResNet-style CNN (compression.zoo "resnet") trained on Fashion-MNIST, then
pruned by `apply_prune` with short finetuning. Unstructured (global magnitude) at 50/75/90% and structured (L2
channel norm, channels really removed) at 25/50%, plus for contrast: 90% before finetuning, LAMP (layer-adaptive
global magnitude) at 90%, and data-free SynFlow at 90%. Columns: top-1 on the test set, parameters (nonzero for
unstructured), bytes actually written (.pt2, and the bitmask + values safetensors for unstructured), eager CPU
latency at batch 1 and 32 and its ratio to the dense model.

    .venv/bin/python bench/prune/run.py --quick    # a few minutes on 2 shared cores
    .venv/bin/python bench/prune/run.py            # wider model, longer training, the full test set

The trained dense model is cached under bench/results/cache/ so reruns skip its training. Unstructured sparsity
does not make dense CPU kernels faster (the zeros are still multiplied); only structured pruning does, which the
latency columns show.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.datasets import fashion_mnist  # noqa: E402
from compression.context import RunContext  # noqa: E402
from compression.data import Dataset  # noqa: E402
from compression.evaluate import evaluate  # noqa: E402
from compression.io import export_model, load_model, save_program  # noqa: E402
from compression.measure import latency_profile  # noqa: E402
from compression.prune import apply_prune  # noqa: E402
from compression.specs.prune import PruneSpec  # noqa: E402
from compression.specs.training import TrainingSpec  # noqa: E402
from compression.task import Task  # noqa: E402
from compression.training import train  # noqa: E402
from compression.zoo import build  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
SETTINGS = {
    True: {"width": 8, "blocks": 1, "train_steps": 600, "finetune_steps": 150, "test_samples": 2000},
    False: {"width": 16, "blocks": 2, "train_steps": 3000, "finetune_steps": 600, "test_samples": 10000},
}


def dense_model(settings: dict, dataset: Dataset, example: tuple[torch.Tensor, ...]) -> nn.Module:
    cache = RESULTS / "cache" / f"prune_resnet_w{settings['width']}_b{settings['blocks']}_{settings['train_steps']}.pt2"
    if not cache.exists():
        torch.manual_seed(0)
        model = build("resnet", base_width=settings["width"], base_blocks=settings["blocks"])
        task = Task(dataset, model, example, cache.parent)
        spec = TrainingSpec(steps=settings["train_steps"], batch_size=64, lr=3e-3, warmup_steps=50)
        started = time.monotonic()
        train(model, lambda m, batch, step: nn.functional.cross_entropy(m(*batch.inputs), batch.labels), spec,
              task, RunContext())
        print(f"trained the dense model in {time.monotonic() - started:.0f} s", file=sys.stderr)
        save_program(export_model(model, example), cache)
    return load_model(cache)


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


def interleaved_latency(models: list[nn.Module], example, rounds: int = 5) -> list[dict[int, float]]:
    """Per model, the best over `rounds` of its median latency, the models timed in turn within every round: on
    shared cores the load changes by the minute, and timing each model once at a different moment would compare
    the load, not the models."""
    best = [{1: float("inf"), 32: float("inf")} for _ in models]
    for _ in range(rounds):
        for index, model in enumerate(models):
            for batch, ms in latency_profile(model, example, [1, 32], compile=False).items():
                best[index][batch] = min(best[index][batch], ms)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small model, short training, 2000 test images")
    args = parser.parse_args()
    settings = SETTINGS[args.quick]
    torch.manual_seed(0)
    arrays = fashion_mnist()
    samples = settings["test_samples"]
    dataset = Dataset.from_arrays({"train.x": arrays["train.x"], "train.y": arrays["train.y"],
                                   "val.x": arrays["test.x"][:samples], "val.y": arrays["test.y"][:samples]}, ["x"])
    val = dataset.split("val")
    example = (torch.from_numpy(arrays["test.x"][:8]),)
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
    for row, latency in zip(table, interleaved_latency(models, example)):
        row["latency_ms_b1"], row["latency_ms_b32"] = round(latency[1], 3), round(latency[32], 3)
    for row in table:
        row["latency_ratio_b1"] = round(row["latency_ms_b1"] / table[0]["latency_ms_b1"], 3)
        row["latency_ratio_b32"] = round(row["latency_ms_b32"] / table[0]["latency_ms_b32"], 3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = RESULTS / ("prune_quick.json" if args.quick else "prune.json")
    output.write_text(json.dumps({"settings": settings, "torch": torch.__version__, "threads": torch.get_num_threads(),
                                  "rows": table}, indent=2))
    print_table(table, settings)
    print(f"\nwritten to {output}")


def print_table(table: list[dict], settings: dict) -> None:
    print(f"\nResNet (width {settings['width']}, {settings['blocks']} block(s)/stage) on Fashion-MNIST, "
          f"{settings['test_samples']} test images, finetune {settings['finetune_steps']} steps; eager CPU latency "
          f"(best of 5 interleaved rounds of 20), {torch.get_num_threads()} threads\n")
    print("| method | top-1 | nonzero params | .pt2 bytes | sparse bytes | ms b1 | ms b32 | b32 vs dense |")
    print("|---|---|---|---|---|---|---|---|")
    for row in table:
        sparse = f"{row['sparse_bytes']:,}" if row["sparse_bytes"] else "-"
        print(f"| {row['method']} | {row['accuracy']:.4f} | {row['nonzero_parameters']:,} | {row['pt2_bytes']:,} | "
              f"{sparse} | {row['latency_ms_b1']:.2f} | {row['latency_ms_b32']:.2f} | "
              f"{row['latency_ratio_b32']:.2f}x |")


if __name__ == "__main__":
    main()
