"""Plan which weights get product-quantized (block size, K) and swap a weight for its PQ parametrization."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from compression.pq.kmeans import KMeansResult, kmeans
from compression.pq.layers import LayerWeight, block_size_for, to_blocks
from compression.pq.parametrizations import PQWeight, QuantNoise, parametrizations_of, register, remove, stored_weight


@dataclass(frozen=True)
class LayerPlan:
    layer: LayerWeight
    block_size: int
    centroids: int  # K for this layer

    @property
    def num_blocks(self) -> int:
        return self.layer.numel // self.block_size


# A weight held by the program's root module itself (`F.linear(x, self.w)` or an einsum in the top-level forward):
# a parametrization registered on the root graph module made it unreadable to every later copy of the graph, and
# the stage failed ("'_CodeOnlyModule' object has no attribute 'w'").
ROOT_WEIGHT = "a parameter of the model's root module, which iPQ cannot hold: it stays in full precision"


def plan_layers(layers: list[LayerWeight], block_sizes, centroids: int, min_blocks_per_centroid: int,
                min_weights: int = 0, min_embedding_rows: int = 0) -> tuple[list[LayerPlan], dict[str, str]]:
    """Block size and K per layer, and {weight name: reason} for the layers left in full precision.

    A layer with fewer than K * min_blocks_per_centroid blocks gets the largest power of two that fits, because a
    codebook about as large as the weight itself compresses nothing. Embedding tables with fewer than
    `min_embedding_rows` rows (a transformer's positions and segment types) stay in full precision: they are a
    small part of the size and every token reads them.
    """
    plans, skipped = [], {}
    for layer in layers:
        if not layer.owner:
            skipped[layer.name] = ROOT_WEIGHT
            continue
        if layer.numel < min_weights:
            skipped[layer.name] = f"{layer.numel} weights, fewer than min_weights={min_weights}"
            continue
        if layer.kind == "embedding" and layer.shape[0] < min_embedding_rows:
            skipped[layer.name] = f"embedding of {layer.shape[0]} rows, fewer than min_embedding_rows=" \
                                  f"{min_embedding_rows}"
            continue
        block_size = block_size_for(layer, block_sizes)
        num_blocks = layer.numel // block_size
        fitting = num_blocks // min_blocks_per_centroid
        k = centroids if fitting >= centroids else (1 << int(math.log2(fitting)) if fitting >= 2 else 0)
        if k < 2:
            skipped[layer.name] = f"{num_blocks} blocks are too few for a codebook"
            continue
        plans.append(LayerPlan(layer, block_size, k))
    return plans, skipped


def fit_codebook(model: nn.Module, plan: LayerPlan, iterations: int, seed: int, device: str,
                 input_moments: Tensor | None = None, rate_weight: float = 0.0) -> KMeansResult:
    """k-means of the layer's blocks; with `input_moments` (E[x_j^2] per input feature of a linear layer) each
    entry of a block is weighted by the mean square of the input it multiplies."""
    weight = stored_weight(model, plan.layer.name).detach().to(device)
    weights = None
    if input_moments is not None:
        weights = to_blocks(input_moments.to(weight).expand(weight.shape).contiguous(), plan.block_size)
    return kmeans(to_blocks(weight, plan.block_size), plan.centroids, iterations, seed, weights=weights,
                  rate_weight=rate_weight)


def quantize_layer(model: nn.Module, plan: LayerPlan, iterations: int = 15, seed: int = 0, device: str = "cpu",
                   centroid_dtype: str = "float16", input_moments: Tensor | None = None,
                   rate_weight: float = 0.0) -> KMeansResult:
    """Replace the layer's weight by centroids[assignments]; any Quant-Noise on it is removed first (the stored
    weight it wrapped is what gets clustered). The original weight is frozen: from now on only the centroids train.
    """
    name = plan.layer.name
    if name in parametrizations_of(model, QuantNoise):
        remove(model, name, keep_value=False)
    fit = fit_codebook(model, plan, iterations, seed, device, input_moments, rate_weight)
    original = stored_weight(model, name)
    original.requires_grad_(False)
    pq = PQWeight(fit.centroids.to(original.device), fit.assignments.to(original.device), plan.layer.shape,
                  centroid_dtype)
    register(model, name, pq)
    return fit


def order_groups(plans: list[LayerPlan], groups: list[list[str]] | None, num_groups: int,
                 order: str) -> list[list[LayerPlan]]:
    """Split the planned layers into groups quantized one after another.

    With explicit `groups` (fnmatch patterns) each layer goes to the first group that matches it; layers matching
    none form a last group. Otherwise the layers are sorted by `order` and cut into `num_groups` consecutive groups.
    """
    if groups is not None:
        buckets: list[list[LayerPlan]] = [[] for _ in range(len(groups) + 1)]
        for plan in plans:
            index = next((i for i, patterns in enumerate(groups)
                          if any(fnmatch.fnmatchcase(plan.layer.name, p) for p in patterns)), len(groups))
            buckets[index].append(plan)
        return [bucket for bucket in buckets if bucket]
    ordered = list(plans)
    if order == "output_first":
        ordered.reverse()
    elif order == "largest_first":
        ordered.sort(key=lambda plan: plan.layer.numel, reverse=True)
    count = min(num_groups, len(ordered))
    bounds = [round(i * len(ordered) / count) for i in range(count + 1)] if count else [0]
    return [ordered[bounds[i]:bounds[i + 1]] for i in range(count)]


def add_quant_noise(model: nn.Module, layers: list[LayerWeight], config, seed: int = 0) -> list[str]:
    """Register Quant-Noise (disabled until `set_noise(model, True)`) on the layers whose blocks fit; returns them."""
    noised = []
    for layer in layers:
        if not layer.owner:  # ROOT_WEIGHT
            continue
        block_size = block_size_for(layer, config.block_sizes)
        weight = stored_weight(model, layer.name)
        with torch.no_grad():
            noise = QuantNoise(weight, config.rate, config.kind, block_size, config.pq_centroids, seed)
        register(model, layer.name, noise)
        noised.append(layer.name)
    return noised
