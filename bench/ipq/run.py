"""Issue 5 benchmark: iPQ, iPQ + int8 and scalar int8/int4, each with and without Quant-Noise, on a ResNet-style
CNN (compression.zoo "resnet") trained on Fashion-MNIST; and k-means time per layer, vectorised vs a Python loop.

Rows: fp32; int8 and int4 (per-channel symmetric weights, written by compression.quant.packed); iPQ (float16
centroids), iPQ + int8 (int8 centroids) and iPQ + int8 with int8 activations, written by compression.pq. "with Quant-Noise" rows start from the fp32
model finetuned with the matching noise (int8 / int4 exact noise, the zero-block proxy for iPQ, whose finetuning
between groups also keeps noise on the layers not yet quantized); the rows without start from the fp32 model as
trained. Size is the bytes of the file written; the ratio is fp32 .pt2 bytes / file bytes.

    .venv/bin/python -m bench.ipq.run --quick    # ResNet-8, 12k training images, 2000 test images
    .venv/bin/python -m bench.ipq.run            # ResNet-14, all 60k / 10k, longer finetuning

The trained fp32 model is cached under bench/results/cache/ so reruns skip its training.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from bench.common.data import fashion_mnist_subset
from bench.common.models import RESULTS, trained_model_path
from bench.common.report import write_results
from compression.context import RunContext
from compression.data import Dataset
from compression.evaluate import evaluate
from compression.io import export_model, load_model, save_program
from compression.pq import apply_ipq, apply_quant_noise
from compression.pq.kmeans import kmeans, kmeans_python_loop
from compression.pq.layers import find_layer_weights, get_parameter, to_blocks
from compression.pq.quantize import plan_layers
from compression.quant.packed import load_packed, write_packed
from compression.quant.weights import WeightFormat, quantize_weight
from compression.specs.ipq import IPQSpec, QuantNoiseConfig, QuantNoiseSpec
from compression.specs.training import TrainingSpec
from compression.task import Task
from compression.zoo import build

SETTINGS = {
    True: {"blocks": 1, "train_samples": 12_000, "train_steps": 300, "noise_steps": 100, "group_steps": 60,
           "groups": 2, "test_samples": 2000, "centroids": 64, "kmeans_iterations": 15},
    False: {"blocks": 2, "train_samples": 60_000, "train_steps": 3000, "noise_steps": 600, "group_steps": 300,
            "groups": 3, "test_samples": 10_000, "centroids": 256, "kmeans_iterations": 15},
}


def fp32_model(settings: dict, dataset: Dataset, example: tuple[torch.Tensor, ...]) -> nn.Module:
    return load_model(fp32_model_path(settings, dataset, example))


def fp32_model_path(settings: dict, dataset: Dataset, example: tuple[torch.Tensor, ...]) -> Path:
    """The cached fp32 ResNet of these settings (also used by bench/pipelines), trained here if it is missing."""
    name = f"ipq_resnet_b{settings['blocks']}_{settings['train_samples']}_{settings['train_steps']}.pt2"
    return trained_model_path(name, lambda: build("resnet", base_blocks=settings["blocks"]),
                              Task(dataset, torch.nn.Identity(), example, RESULTS),
                              TrainingSpec(steps=settings["train_steps"], batch_size=128, lr=3e-3, warmup_steps=30))


def scalar_row(model: nn.Module, bits: int, task: Task, path: Path) -> tuple[float, int]:
    """Per-channel symmetric int8/int4 weights of every conv/linear layer, written packed, evaluated as loaded."""
    quantized = copy.deepcopy(model)
    weights = {}
    for layer in find_layer_weights(quantized):
        weight = quantize_weight(get_parameter(quantized, layer.name), WeightFormat(bits=bits))
        with torch.no_grad():
            get_parameter(quantized, layer.name).copy_(weight.dequantized)
        weights[layer.name] = weight
    write_packed(path, quantized, task.example_inputs, weights)
    return evaluate(load_packed(path), task.dataset.split("val"))["accuracy"], path.stat().st_size


def noised(model: nn.Module, kind: str, settings: dict, task: Task) -> nn.Module:
    spec = QuantNoiseSpec(noise=QuantNoiseConfig(rate=0.1, kind=kind), distillation=None,
                          training=TrainingSpec(steps=settings["noise_steps"], batch_size=64, lr=5e-4))
    return apply_quant_noise(spec, model, task, RunContext()).model


def ipq_spec(settings: dict, centroid_dtype: str, with_noise: bool) -> IPQSpec:
    return IPQSpec(centroids=settings["centroids"], centroid_dtype=centroid_dtype, num_groups=settings["groups"],
                   kmeans_iterations=settings["kmeans_iterations"],
                   training=TrainingSpec(steps=settings["group_steps"], batch_size=64, lr=5e-4),
                   quant_noise=QuantNoiseConfig(rate=0.1) if with_noise else None)


def kmeans_timings(model: nn.Module, settings: dict) -> list[dict]:
    """Seconds per layer for the same blocks, K and iterations: vectorised k-means vs the Python-loop reference."""
    spec = ipq_spec(settings, "float16", False)
    plans, _ = plan_layers(find_layer_weights(model), spec.block_sizes, spec.centroids, spec.min_blocks_per_centroid,
                           spec.min_weights)
    timings = []
    for plan in plans:
        blocks = to_blocks(get_parameter(model, plan.layer.name).detach(), plan.block_size)
        started = time.perf_counter()
        fast = kmeans(blocks, plan.centroids, settings["kmeans_iterations"])
        vectorised = time.perf_counter() - started
        started = time.perf_counter()
        slow = kmeans_python_loop(blocks, plan.centroids, settings["kmeans_iterations"])
        loop = time.perf_counter() - started
        timings.append({"layer": plan.layer.name, "blocks": plan.num_blocks, "block_size": plan.block_size,
                        "centroids": plan.centroids, "vectorised_s": round(vectorised, 4), "loop_s": round(loop, 3),
                        "speedup": round(loop / vectorised, 1), "inertia_vectorised": round(fast.inertia, 4),
                        "inertia_loop": round(slow.inertia, 4)})
        print(f"k-means {timings[-1]}", file=sys.stderr)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ResNet-8, short training, 2000 test images")
    args = parser.parse_args()
    settings = SETTINGS[args.quick]
    torch.manual_seed(0)
    arrays = fashion_mnist_subset(settings["train_samples"], settings["test_samples"], shuffle=False)
    dataset = Dataset.from_arrays(arrays, ["x"])
    example = (torch.from_numpy(arrays["val.x"][:8]),)
    model = fp32_model(settings, dataset, example)
    table = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        task = Task(dataset, model, example, scratch)
        fp32_path = save_program(export_model(model, example), scratch / "fp32.pt2")
        fp32_bytes = fp32_path.stat().st_size
        table.append({"method": "fp32", "quant_noise": False, "size_bytes": fp32_bytes,
                      "accuracy": evaluate(model, dataset.split("val"))["accuracy"]})
        for with_noise in (False, True):
            for bits in (8, 4):
                started = time.monotonic()
                source = noised(model, f"int{bits}", settings, task) if with_noise else model
                accuracy, size = scalar_row(source, bits, task, scratch / f"int{bits}_{with_noise}.safetensors")
                table.append({"method": f"int{bits} weights", "quant_noise": with_noise, "size_bytes": size,
                              "accuracy": accuracy, "seconds": round(time.monotonic() - started, 1)})
                print(table[-1], file=sys.stderr)
            source = noised(model, "proxy", settings, task) if with_noise else model
            for centroid_dtype, activation_bits, name in (("float16", None, "iPQ"), ("int8", None, "iPQ + int8"),
                                                          ("int8", 8, "iPQ + int8, int8 activations")):
                started = time.monotonic()
                row_task = Task(dataset, model, example, scratch / f"{name}_{with_noise}")
                spec = ipq_spec(settings, centroid_dtype, with_noise).model_copy(
                    update={"activation_bits": activation_bits})
                result = apply_ipq(spec, source, row_task, RunContext())
                table.append({"method": name, "quant_noise": with_noise, "size_bytes": result.metrics["packed_bytes"],
                              "accuracy": result.metrics["after"]["accuracy"],
                              "weights_compression_ratio": result.metrics["weights_compression_ratio"],
                              "seconds": round(time.monotonic() - started, 1)})
                print(table[-1], file=sys.stderr)
    for row in table:
        row["compression_ratio"] = round(fp32_bytes / row["size_bytes"], 2)
        row["accuracy_drop_points"] = round(100 * (table[0]["accuracy"] - row["accuracy"]), 2)
    timings = kmeans_timings(model, settings)
    output = write_results("ipq_quick.json" if args.quick else "ipq.json", {
        "settings": settings, "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": table,
        "kmeans": timings})
    print_tables(table, timings, settings)
    print(f"\nwritten to {output}")


def print_tables(table: list[dict], timings: list[dict], settings: dict) -> None:
    print(f"\nResNet ({settings['blocks']} block(s)/stage) on Fashion-MNIST, {settings['test_samples']} test images; "
          f"iPQ K={settings['centroids']}, {settings['groups']} groups x {settings['group_steps']} finetuning steps, "
          f"Quant-Noise p=0.1 for {settings['noise_steps']} steps\n")
    print("| method | Quant-Noise | top-1 | drop (points) | bytes on disk | x smaller than fp32 .pt2 |")
    print("|---|---|---|---|---|---|")
    for row in table:
        print(f"| {row['method']} | {'yes' if row['quant_noise'] else 'no'} | {row['accuracy']:.4f} | "
              f"{row['accuracy_drop_points']:+.2f} | {row['size_bytes']:,} | {row['compression_ratio']:.1f}x |")
    print(f"\nk-means, {settings['kmeans_iterations']} iterations, same blocks and K: vectorised (chunked matmul) vs "
          "a Python loop over rows\n")
    print("| layer | blocks x size | K | vectorised s | loop s | speedup |")
    print("|---|---|---|---|---|---|")
    for row in timings:
        print(f"| {row['layer']} | {row['blocks']} x {row['block_size']} | {row['centroids']} | "
              f"{row['vectorised_s']:.4f} | {row['loop_s']:.2f} | {row['speedup']:.0f}x |")


if __name__ == "__main__":
    main()
