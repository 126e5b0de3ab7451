"""Issue 10 diagnosis: which layers' product quantization breaks a real encoder (no finetuning).

Quantizes one layer (or one kind of layer) at a time with the iPQ plan (k-means, int8 centroids) and reports the
fidelity of the case's pooled vectors to the program the jobs start from. Minutes on one core:

    OMP_NUM_THREADS=1 nice .venv/bin/python -m bench.real_models.ipq_probe --model rxnfp
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from bench.real_models.cases import CASES, outputs_of
from compression.pq.activations import linear_input_second_moments
from compression.pq.kmeans import kmeans
from compression.pq.layers import find_layer_weights, to_blocks
from compression.pq.parametrizations import as_stored
from compression.pq.quantize import plan_layers
from compression.specs.ipq import IPQSpec


def quantized_value(weight, plan, iterations, moments=None):
    weights = None
    if moments is not None:
        weights = to_blocks(moments.expand(weight.shape).contiguous(), plan.block_size)
    fit = kmeans(to_blocks(weight.detach(), plan.block_size), plan.centroids, iterations, 0, weights=weights)
    centroids = as_stored(fit.centroids, "int8")
    return centroids[fit.assignments].reshape(weight.shape)


def kind_of(name: str, kind: str) -> str:
    for part in ("query", "key", "value", "attention.output", "intermediate", "output.dense", "pooler"):
        if part in name:
            return part
    return kind


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="rxnfp")
    parser.add_argument("--val", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--per-layer", action="store_true")
    parser.add_argument("--weighted", action="store_true", help="activation-weighted k-means")
    parser.add_argument("--attention-block", type=int, default=4)
    parser.add_argument("--linear-block", type=int, default=8)
    parser.add_argument("--embedding-block", type=int, default=8)
    parser.add_argument("--down-block", type=int, default=0, help="block of FFN down projections (in > out)")
    parser.add_argument("--min-embedding-rows", type=int, default=1024)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ipq_probe_"))
    case = CASES[args.model](workdir, {"train": 64, "val": args.val})
    model = case.reference
    inputs = case.eval_inputs  # the judge pools with the whole split's mask
    reference = outputs_of(model, inputs)
    print("fp32", case.judge(reference, reference))
    spec = IPQSpec(centroid_dtype="int8", block_sizes={"attention": args.attention_block,
                                                       "linear": args.linear_block, "ffn": args.linear_block,
                                                       "embedding": args.embedding_block},
                   min_embedding_rows=args.min_embedding_rows, min_weights=0)
    plans, skipped = plan_layers(find_layer_weights(model), spec.block_sizes, spec.centroids,
                                 spec.min_blocks_per_centroid, spec.min_weights, spec.min_embedding_rows)
    print("skipped", skipped)
    if args.down_block:
        plans = [dataclasses.replace(plan, block_size=args.down_block)
                 if plan.layer.kind == "ffn" and plan.layer.shape[1] > plan.layer.shape[0] else plan for plan in plans]
    parameters = dict(model.named_parameters())
    by_kind = defaultdict(list)
    quantized = {}
    started = time.monotonic()
    moments = {}
    if args.weighted:
        batches = [tuple(t[i:i + 16] for t in case.eval_inputs) for i in range(0, min(64, len(inputs[0])), 16)]
        moments = linear_input_second_moments(model, {plan.layer.name for plan in plans}, batches)
        print("moments of", len(moments), "layers; max/mean per layer:",
              [round(float(m.max() / m.mean()), 1) for m in moments.values()][:8])
    for plan in plans:
        weight = parameters[plan.layer.name]
        quantized[plan.layer.name] = quantized_value(weight, plan, args.iterations, moments.get(plan.layer.name))
        error = float((quantized[plan.layer.name] - weight).norm() / weight.norm())
        by_kind[kind_of(plan.layer.name, plan.layer.kind)].append(plan.layer.name)
        print(f"{plan.layer.name} {plan.layer.kind} {tuple(plan.layer.shape)} b={plan.block_size} "
              f"K={plan.centroids} rel_err={error:.3f}", flush=True)
    print(f"k-means {time.monotonic() - started:.0f}s")

    def judge_with(names):
        saved = {name: parameters[name].detach().clone() for name in names}
        with torch.no_grad():
            for name in names:
                parameters[name].copy_(quantized[name])
        result = case.judge(outputs_of(model, inputs), reference)
        with torch.no_grad():
            for name in names:
                parameters[name].copy_(saved[name])
        return {key: round(value, 3) for key, value in result.items()}

    for kind, names in by_kind.items():
        print("kind", kind, len(names), judge_with(names), flush=True)
    print("all", judge_with(list(quantized)), flush=True)
    if args.per_layer:
        for name in quantized:
            print("layer", name, judge_with([name]), flush=True)


if __name__ == "__main__":
    main()
