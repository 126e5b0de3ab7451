"""Activation range observers: they watch calibration batches and choose the clip range [lo, hi] to quantize.

- min-max: the extremes seen (one outlier sets the range);
- moving-average min-max: exponential average of each batch's extremes (softens rare outliers);
- percentile: clip |x| at a percentile (negative side at the same percentile of the negatives);
- MSE: the clip ratio of the min-max range minimising the squared quantization error, searched on a grid;
- KL: TensorRT's entropy calibration, the |x| threshold whose quantized histogram is closest (KL divergence) to
  the observed one.

Percentile, MSE and KL need the distribution, not just the extremes: they keep a uniform random sample of the
values (at most `sample_size`, refreshed batch by batch with reservoir-style replacement) so memory stays bounded
whatever the calibration size; the extremes themselves are always exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from compression.quant.affine import fake_quantize, qparams_from_min_max


class Observer:
    """Min-max observer and the base of the others: `observe(x)` per batch, then `range()` -> (lo, hi)."""

    def __init__(self, bits: int = 8, symmetric: bool = False):
        self.bits = bits
        self.symmetric = symmetric
        self.lo = math.inf
        self.hi = -math.inf

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach()
        self.lo = min(self.lo, float(x.min()))
        self.hi = max(self.hi, float(x.max()))

    def range(self) -> tuple[float, float]:
        if self.lo > self.hi:
            raise RuntimeError("observer saw no data: calibrate before asking for its range")
        return self.lo, self.hi


class MovingAverageMinMaxObserver(Observer):
    def __init__(self, bits: int = 8, symmetric: bool = False, averaging_constant: float = 0.01):
        super().__init__(bits, symmetric)
        self.averaging_constant = averaging_constant
        self.seen = False

    def observe(self, x: torch.Tensor) -> None:
        lo, hi = float(x.detach().min()), float(x.detach().max())
        if not self.seen:
            self.lo, self.hi, self.seen = lo, hi, True
            return
        c = self.averaging_constant
        self.lo += c * (lo - self.lo)
        self.hi += c * (hi - self.hi)


class _SamplingObserver(Observer):
    def __init__(self, bits: int = 8, symmetric: bool = False, sample_size: int = 1 << 18, seed: int = 0):
        super().__init__(bits, symmetric)
        self.sample_size = sample_size
        self.seen_values = 0
        self.sample = torch.empty(0)
        self.generator = torch.Generator().manual_seed(seed)

    def observe(self, x: torch.Tensor) -> None:
        super().observe(x)
        flat = x.detach().float().reshape(-1)
        self.seen_values += flat.numel()
        # Keep each value with probability sample_size / seen so far: the sample stays uniform over all batches.
        keep = min(flat.numel(), max(1, round(self.sample_size * flat.numel() / self.seen_values)))
        picked = flat[torch.randperm(flat.numel(), generator=self.generator)[:keep]]
        if self.sample.numel() + keep > self.sample_size:
            survivors = torch.randperm(self.sample.numel(), generator=self.generator)
            self.sample = self.sample[survivors[:self.sample_size - keep]]
        self.sample = torch.cat([self.sample, picked])


class PercentileObserver(_SamplingObserver):
    def __init__(self, bits: int = 8, symmetric: bool = False, percentile: float = 99.99, **kwargs):
        super().__init__(bits, symmetric, **kwargs)
        self.percentile = percentile

    def range(self) -> tuple[float, float]:
        super().range()
        values = self.sample.numpy()
        q = self.percentile
        hi = float(np.percentile(values[values > 0], q)) if (values > 0).any() else 0.0
        lo = -float(np.percentile(-values[values < 0], q)) if (values < 0).any() else 0.0
        if self.symmetric:
            bound = max(hi, -lo)
            return -bound, bound
        return lo, hi


class MSEObserver(_SamplingObserver):
    """Searches clip = ratio * (min, max) for ratio in a grid, scoring each with the real quantizer."""

    def __init__(self, bits: int = 8, symmetric: bool = False, ratios: int = 50, min_ratio: float = 0.05,
                 sample_size: int = 1 << 16, **kwargs):
        # Every candidate quantizes the whole sample: a smaller one keeps the search to a fraction of a second.
        super().__init__(bits, symmetric, sample_size=sample_size, **kwargs)
        self.ratios = torch.linspace(min_ratio, 1.0, ratios)

    def range(self) -> tuple[float, float]:
        lo, hi = super().range()
        return mse_optimal_range(self.sample, lo, hi, self.bits, self.symmetric, self.ratios)


def mse_optimal_range(values: torch.Tensor, lo: float, hi: float, bits: int, symmetric: bool,
                      ratios: torch.Tensor) -> tuple[float, float]:
    best, best_error = (lo, hi), math.inf
    for ratio in ratios.tolist():
        clip_lo, clip_hi = lo * ratio, hi * ratio
        params = qparams_from_min_max(torch.tensor(clip_lo), torch.tensor(clip_hi), bits, symmetric=symmetric)
        error = float((fake_quantize(values, params) - values).pow(2).mean())
        if error < best_error:
            best, best_error = (clip_lo, clip_hi), error
    return best


class KLObserver(_SamplingObserver):
    """TensorRT entropy calibration on a histogram with `bins` bins.

    For each candidate threshold bin i, P is the histogram up to i with everything beyond folded into the last
    kept bin, Q is P merged into `levels` quantization bins and spread back uniformly over P's non-empty bins; the
    threshold minimising KL(P || Q) wins.

    Symmetric quantization histograms |x| with 2^(bits-1) levels (TensorRT's int8 case) and clips at +-threshold.
    Asymmetric quantization histograms x - min(x) with 2^bits levels and keeps the minimum, clipping only the top:
    the same thing for ReLU outputs (min 0), and for signed data such as normalised images it does not throw away
    the bright half of the range to match a folded-over |x| distribution.
    """

    def __init__(self, bits: int = 8, symmetric: bool = False, bins: int = 2048, **kwargs):
        super().__init__(bits, symmetric, **kwargs)
        self.bins = bins

    def range(self) -> tuple[float, float]:
        lo, hi = super().range()
        if self.symmetric:
            values, origin, levels = self.sample.abs().numpy(), 0.0, 2 ** (self.bits - 1)
            top = max(-lo, hi)
        else:
            values, origin, levels = (self.sample - lo).numpy(), lo, 2 ** self.bits
            top = hi - lo
        if top == 0:
            return lo, hi
        # Values at the origin (zeros: half of every ReLU output; an image's background) are on the grid: left in,
        # their spike in bin 0 would dominate the divergence and drag the threshold down.
        values = values[values > 0]
        histogram, edges = np.histogram(values, bins=self.bins, range=(0.0, top))
        threshold = float(edges[_kl_threshold_bin(histogram.astype(np.float64), levels)])
        if self.symmetric:
            return -threshold, threshold
        return origin, origin + threshold


def _smooth(distribution: np.ndarray, eps: float = 1e-4) -> np.ndarray:
    """Give empty bins a little mass taken from the others (MXNet/TensorRT), so KL stays finite when Q misses
    mass P has, e.g. the outliers folded into P's last bin."""
    zeros = distribution == 0
    if zeros.all():
        return np.full_like(distribution, 1.0 / distribution.size)
    taken = eps * zeros.sum() / (~zeros).sum()
    return np.maximum(distribution + eps * zeros - taken * ~zeros, 1e-12)


def _kl_threshold_bin(histogram: np.ndarray, levels: int) -> int:
    """Upper edge index (into the bin edges) of the threshold minimising KL(P || Q)."""
    bins = len(histogram)
    if bins <= levels:
        return bins
    best_index, best_kl = bins, math.inf
    stride = max(1, (bins - levels) // 256)  # 256 candidates are plenty and keep calibration fast
    for i in range(levels, bins + 1, stride):
        reference = histogram[:i].copy()
        reference[-1] += histogram[i:].sum()
        nonzero = reference > 0
        # Q: P's first i bins merged into `levels` chunks, each chunk's mass spread over its non-empty bins.
        starts = np.linspace(0, i, levels + 1).astype(int)[:-1]
        lengths = np.diff(np.append(starts, i))
        mass = np.add.reduceat(histogram[:i], starts)
        occupied = np.add.reduceat(nonzero.astype(np.float64), starts)
        candidate = np.repeat(mass / np.maximum(occupied, 1), lengths) * nonzero
        p = _smooth(reference / reference.sum())
        q = _smooth(candidate / max(candidate.sum(), 1e-30))
        kl = float(np.sum(p * np.log(p / q)))
        if kl < best_kl:
            best_index, best_kl = i, kl
    return best_index


def make_observer(kind: str, bits: int, symmetric: bool, percentile: float = 99.99,
                  averaging_constant: float = 0.01, seed: int = 0) -> Observer:
    if kind == "minmax":
        return Observer(bits, symmetric)
    if kind == "moving_average_minmax":
        return MovingAverageMinMaxObserver(bits, symmetric, averaging_constant)
    if kind == "percentile":
        return PercentileObserver(bits, symmetric, percentile, seed=seed)
    if kind == "mse":
        return MSEObserver(bits, symmetric, seed=seed)
    if kind == "kl":
        return KLObserver(bits, symmetric, seed=seed)
    raise ValueError(f"unknown observer '{kind}'")
