"""Vectorised k-means for product quantization, on whatever device the blocks live on.

Distances are computed a chunk of rows at a time (||x||^2 - 2 x.c + ||c||^2 as one matmul per chunk), so memory
stays bounded by `max_chunk_bytes` whatever the number of blocks. A cluster that ends an iteration empty takes half
of the largest cluster (its centroid is split in two along a small random direction), as in Stock et al., so all K
codewords stay in use. Everything random comes from one seeded generator: same input and seed, same result.

With `weights` (one non-negative weight per entry of x) the distance is sum_d w_d (x_d - c_d)^2 and a centroid is
the weighted mean of its members: iPQ passes the mean squared input of each column of a linear layer, so that the
error k-means minimises is (diagonally) the error of the layer's output, not of its weight (Stock et al. 2020 fit
the codebook to the layer's outputs for the same reason).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# Small enough for a chunk's distance matrix to stay in cache, large enough for an efficient matmul.
DEFAULT_CHUNK_BYTES = 4 * 2**20
# Relative size of the perturbation that splits a large cluster's centroid in two.
_SPLIT_EPS = 1e-3


@dataclass
class KMeansResult:
    centroids: Tensor  # (K, d)
    assignments: Tensor  # (N,) int64, index of each row's centroid
    counts: Tensor  # (K,) int64, rows per centroid
    inertia: float  # sum of squared distances of the rows to their centroids


def assign(x: Tensor, centroids: Tensor, max_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
           weights: Tensor | None = None, costs: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Nearest centroid of each row of `x` and its squared distance, a chunk of rows at a time. With `costs` (one
    per centroid) a row goes to the centroid minimising distance + cost; the distance returned excludes the cost."""
    chunk_rows = max(1, max_chunk_bytes // (4 * max(1, centroids.shape[0])))
    costs = torch.zeros(centroids.shape[0], dtype=x.dtype, device=x.device) if costs is None else costs.to(x)
    if weights is not None:
        return _assign_weighted(x, centroids, weights, chunk_rows, costs)
    centroid_norms = centroids.pow(2).sum(1) + costs
    indices, distances = [], []
    for chunk in x.split(chunk_rows):
        # ||x||^2 is the same for every centroid, so it is added after the argmin rather than to the whole matrix.
        partial = torch.addmm(centroid_norms, chunk, centroids.T, alpha=-2)
        best, index = partial.min(1)
        indices.append(index)
        distances.append((best - costs[index] + chunk.pow(2).sum(1)).clamp_min(0))
    return torch.cat(indices), torch.cat(distances)


def _assign_weighted(x: Tensor, centroids: Tensor, weights: Tensor, chunk_rows: int,
                     costs: Tensor) -> tuple[Tensor, Tensor]:
    squared = centroids.pow(2).T
    indices, distances = [], []
    for chunk, weight in zip(x.split(chunk_rows), weights.split(chunk_rows)):
        # sum_d w (x - c)^2 = sum_d w x^2 - 2 (w x) . c + w . c^2; the first term is added after the argmin.
        partial = torch.addmm(weight @ squared + costs, weight * chunk, centroids.T, alpha=-2)
        best, index = partial.min(1)
        indices.append(index)
        distances.append((best - costs[index] + (weight * chunk.pow(2)).sum(1)).clamp_min(0))
    return torch.cat(indices), torch.cat(distances)


def index_entropy_bits(counts: Tensor) -> float:
    """Bits per index an ideal entropy coder needs for codewords used `counts` times (log2 K when all are equal)."""
    shares = counts.double()[counts > 0] / counts.sum()
    return float(-(shares * torch.log2(shares)).sum())


def code_lengths(counts: Tensor) -> Tensor:
    """Bits an entropy coder spends on each codeword, -log2 of its share of the rows (an unused one: as if it had
    half a row, so it can still win a row that is much nearer to it)."""
    shares = counts.double().clamp_min(0.5) / counts.sum().clamp_min(1)
    return -torch.log2(shares)


def kmeans(x: Tensor, k: int, iterations: int = 15, seed: int = 0,
           max_chunk_bytes: int = DEFAULT_CHUNK_BYTES, weights: Tensor | None = None,
           rate_weight: float = 0.0) -> KMeansResult:
    """Cluster the rows of `x` (N, d) into `k` centroids, initialised by k-means++ (which, unlike k random rows,
    rarely leaves two centroids in one true cluster).

    `rate_weight` > 0 makes it entropy-constrained (Chou, Lookabaugh and Gray 1989): a row goes to the centroid
    minimising distance + lambda * code length in bits, lambda = rate_weight * the mean distance of plain k-means'
    first assignment, so a bit of index is traded for rate_weight of the average error. Frequent codewords grow more
    frequent and the indices, entropy-coded in the packed file, shrink; codewords left empty stay empty."""
    if x.dim() != 2:
        raise ValueError(f"k-means takes an (N, d) matrix, got shape {tuple(x.shape)}")
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the number of rows), got {k}")
    x = x.detach().float()
    if weights is not None:
        if weights.shape != x.shape:
            raise ValueError(f"weights must have the shape of x {tuple(x.shape)}, got {tuple(weights.shape)}")
        # A tiny floor keeps every weighted mean defined (a column no input ever reaches still gets a value).
        weights = weights.detach().float().to(x.device)
        weights = weights / weights.mean().clamp_min(1e-30) + 1e-6
    generator = torch.Generator(device="cpu").manual_seed(seed)
    centroids = kmeans_plus_plus(x, k, generator, weights)
    costs = None
    for _ in range(iterations):
        assignments, distances = assign(x, centroids, max_chunk_bytes, weights, costs)
        counts = torch.bincount(assignments, minlength=k)
        if rate_weight > 0:
            # lambda is fixed by the first, unconstrained assignment: tied to the current mean distance it would
            # feed back (more rows on popular codewords, a larger mean, a larger lambda) and run away.
            bit_price = rate_weight * distances.mean() if costs is None else bit_price
            costs = (bit_price * code_lengths(counts)).to(x.dtype)
        filled = counts > 0
        if weights is None:
            sums = torch.zeros_like(centroids).index_add_(0, assignments, x)
            centroids[filled] = sums[filled] / counts[filled].unsqueeze(1).to(x.dtype)
        else:
            sums = torch.zeros_like(centroids).index_add_(0, assignments, weights * x)
            totals = torch.zeros_like(centroids).index_add_(0, assignments, weights)
            centroids[filled] = sums[filled] / totals[filled]
        if rate_weight == 0 and not bool(filled.all()):
            _split_largest_into_empty(x, centroids, assignments, counts, generator)
    assignments, _ = assign(x, centroids, max_chunk_bytes, weights, costs)
    counts = torch.bincount(assignments, minlength=k)
    if rate_weight == 0 and not bool((counts > 0).all()):
        # Rows equidistant from two centroids all go to the first; split again so that no codeword is wasted.
        _split_largest_into_empty(x, centroids, assignments, counts, generator)
    inertia = float((x - centroids[assignments]).pow(2).sum())
    return KMeansResult(centroids, assignments, counts, inertia)


def kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator, weights: Tensor | None = None) -> Tensor:
    """k rows of `x`, each drawn with probability proportional to its squared distance to those already drawn."""
    n = x.shape[0]
    weights = torch.ones_like(x) if weights is None else weights
    chosen = [int(torch.randint(n, (1,), generator=generator))]
    nearest = (weights * (x - x[chosen[0]]).pow(2)).sum(1)
    for _ in range(1, k):
        cumulative = nearest.cumsum(0)
        total = float(cumulative[-1])
        if total <= 0:  # fewer distinct rows than k: the remaining picks are duplicates, split later if empty
            chosen.append(int(torch.randint(n, (1,), generator=generator)))
        else:
            target = torch.rand(1, generator=generator, dtype=torch.float64).item() * total
            threshold = torch.tensor([target], device=x.device, dtype=cumulative.dtype)
            chosen.append(min(int(torch.searchsorted(cumulative, threshold)), n - 1))
        nearest = torch.minimum(nearest, (weights * (x - x[chosen[-1]]).pow(2)).sum(1))
    return x[torch.tensor(chosen, device=x.device)].clone()


def _split_largest_into_empty(x: Tensor, centroids: Tensor, assignments: Tensor, counts: Tensor,
                              generator: torch.Generator) -> None:
    """Give every empty cluster half of the currently largest one (in place).

    The largest centroid c becomes c + e and the empty one c - e for a small random e; the members of the largest
    cluster then go to whichever of the two is nearer, so counts stay exact for the next split.
    """
    for empty in torch.nonzero(counts == 0).flatten().tolist():
        largest = int(counts.argmax())
        if counts[largest] < 2:
            return
        direction = torch.randn(centroids.shape[1], generator=generator).to(centroids)
        scale = _SPLIT_EPS * (centroids[largest].norm() + 1e-8) / (direction.norm() + 1e-12)
        centroids[empty] = centroids[largest] - scale * direction
        centroids[largest] = centroids[largest] + scale * direction
        members = torch.nonzero(assignments == largest).flatten()
        nearer_empty = (x[members] - centroids[empty]).pow(2).sum(1) < (x[members] - centroids[largest]).pow(2).sum(1)
        if not bool(nearer_empty.any()) or bool(nearer_empty.all()):
            # Identical members: the split direction cannot separate them, so hand over half by position.
            nearer_empty = torch.arange(len(members), device=members.device) < len(members) // 2
        assignments[members[nearer_empty]] = empty
        moved = int(nearer_empty.sum())
        counts[empty] = moved
        counts[largest] -= moved
        centroids[empty] = x[members[nearer_empty]].mean(0)
        centroids[largest] = x[members[~nearer_empty]].mean(0)


def kmeans_python_loop(x: Tensor, k: int, iterations: int = 15, seed: int = 0) -> KMeansResult:
    """The straightforward reference: one Python iteration per row (distances to all centroids) and per cluster.

    Same initialisation as `kmeans`; empty clusters are simply left where they are. Kept for the speed benchmark.
    """
    x = x.detach().float()
    n = x.shape[0]
    centroids = kmeans_plus_plus(x, k, torch.Generator(device="cpu").manual_seed(seed))
    assignments = torch.zeros(n, dtype=torch.long)
    for _ in range(iterations):
        for row in range(n):
            assignments[row] = int(((centroids - x[row]) ** 2).sum(1).argmin())
        for cluster in range(k):
            members = x[assignments == cluster]
            if len(members):
                centroids[cluster] = members.mean(0)
    distances = ((x - centroids[assignments]) ** 2).sum(1)
    return KMeansResult(centroids, assignments, torch.bincount(assignments, minlength=k), float(distances.sum()))
