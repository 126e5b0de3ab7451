"""Weight fake-quantizers for QAT, called in the graph between a conv/linear weight and its use (prepare.py).

Each is an nn.Module whose forward maps the full-precision weight to its fake-quantized value; the optimizer keeps
updating the full-precision weight and every forward re-quantizes it.
`codes_and_scale(weight)` gives the integer codes and the per-channel (or per-tensor) scale of that value, which is
what a packed low-bit artifact stores.

Grids are symmetric around zero. Min-max and SAWB use the narrow signed grid (codes -Qp..Qp, Qp = 2^(b-1) - 1; at 2
bits that is ternary), LSQ the full signed grid of the paper (codes -2^(b-1)..Qp) since its learned step can make
use of the extra negative code.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from compression.quant.affine import QParams, SCALE_EPS, fake_quantize, qparams_for, qrange

# SAWB (Choi et al. 2018): clip = c1 * sqrt(E[w^2]) + c2 * E|w|, coefficients fitted per bit width. The order of
# the terms matters: for a unit Gaussian (sqrt(E[w^2]) = 1, E|w| = 0.798) this form gives 1.47, 2.01, 2.47, 2.87
# for 2..5 bits, within 0.5% of the MSE-optimal clip (2 bits: of the 4-level grid the paper used; see the tests),
# while c1 * E|w| + c2 * sqrt(E[w^2]) (fms-model-optimizer's reading) is negative from 3 bits on.
SAWB_COEFFICIENTS = {2: (3.12, -2.064), 3: (7.509, -6.892), 4: (12.68, -12.80), 5: (17.74, -18.64)}


def grad_scale(x: Tensor, scale: float) -> Tensor:
    """`x` in the forward pass, gradient multiplied by `scale` in the backward pass (LSQ's trick)."""
    return x * scale - (x * scale).detach() + x.detach()


def _channel_view(weight: Tensor, per_channel: bool) -> Tensor:
    """Weight as (channels, elements per channel), or (1, numel) per tensor."""
    return weight.reshape(weight.shape[0], -1) if per_channel else weight.reshape(1, -1)


class _SymmetricWeightQuantizer(nn.Module):
    """Common part: a symmetric signed grid of `bits` bits, per output channel (axis 0) or per tensor."""

    kind = ""

    def __init__(self, bits: int, per_channel: bool, narrow: bool):
        super().__init__()
        self.bits = bits
        self.per_channel = per_channel
        self.qmin, self.qmax = qrange(bits, signed=True, narrow=narrow)

    def scale(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def qparams(self, weight: Tensor) -> QParams:
        scale = self.scale(weight)
        return QParams(scale, torch.zeros_like(scale), self.qmin, self.qmax, 0 if self.per_channel else None)

    def forward(self, weight: Tensor) -> Tensor:
        return fake_quantize(weight, self.qparams(weight))

    @torch.no_grad()
    def codes_and_scale(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        params = self.qparams(weight)
        shape = [-1] + [1] * (weight.dim() - 1) if self.per_channel else []
        codes = torch.clamp(torch.round(weight / params.scale.reshape(shape)), self.qmin, self.qmax)
        return codes.to(torch.int8), params.scale.detach().clone()

    def summary(self, weight: Tensor) -> dict:
        scale = self.scale(weight).detach()
        return {"quantizer": self.kind, "bits": self.bits, "step_mean": float(scale.mean()),
                "step_min": float(scale.min()), "step_max": float(scale.max())}


class MinMaxWeightQuantizer(_SymmetricWeightQuantizer):
    """STE baseline: scale = max|w| / Qp recomputed every forward, rounding with the straight-through estimator."""

    kind = "ste"

    def __init__(self, bits: int, per_channel: bool = True):
        super().__init__(bits, per_channel, narrow=True)

    def scale(self, weight: Tensor) -> Tensor:
        return qparams_for(weight.detach(), self.bits, symmetric=True, narrow=True,
                           axis=0 if self.per_channel else None).scale


class LSQWeightQuantizer(_SymmetricWeightQuantizer):
    """LSQ (Esser et al. 2020): a learned step per output channel (or per tensor).

    Initialised to 2 * mean|w| / sqrt(Qp); its gradient is scaled by 1 / sqrt(N * Qp) with N the number of weights
    one step serves; positivity is kept by using |s| + eps, so no optimizer step can make it negative.
    """

    kind = "lsq"

    def __init__(self, weight: Tensor, bits: int, per_channel: bool = True):
        super().__init__(bits, per_channel, narrow=False)
        rows = _channel_view(weight.detach(), per_channel)
        init = 2 * rows.abs().mean(dim=1) / math.sqrt(self.qmax)
        self.step = nn.Parameter(init if per_channel else init.reshape(()))
        self.gradient_scale = 1.0 / math.sqrt(rows.shape[1] * self.qmax)

    def scale(self, weight: Tensor) -> Tensor:
        return grad_scale(self.step, self.gradient_scale).abs() + SCALE_EPS


class SAWBWeightQuantizer(_SymmetricWeightQuantizer):
    """SAWB: clip from the first two moments of the weights, recomputed every forward; scale = clip / Qp.

    Above 5 bits there are no fitted coefficients, so it falls back to max|w| (and says so in `summary`).
    """

    kind = "sawb"

    def __init__(self, bits: int, per_channel: bool = True):
        super().__init__(bits, per_channel, narrow=True)
        self.coefficients = SAWB_COEFFICIENTS.get(bits)

    def clip(self, weight: Tensor) -> Tensor:
        rows = _channel_view(weight.detach(), self.per_channel)
        if self.coefficients is None:
            clip = rows.abs().amax(dim=1)
        else:
            c1, c2 = self.coefficients
            clip = c1 * rows.pow(2).mean(dim=1).sqrt() + c2 * rows.abs().mean(dim=1)
            # A clip beyond max|w| only wastes levels (possible for very light-tailed channels).
            clip = torch.minimum(clip, rows.abs().amax(dim=1))
        return clip if self.per_channel else clip.reshape(())

    def scale(self, weight: Tensor) -> Tensor:
        return (self.clip(weight) / self.qmax).clamp(min=SCALE_EPS)

    def summary(self, weight: Tensor) -> dict:
        return {**super().summary(weight), "max_abs_fallback": self.coefficients is None}


def make_weight_quantizer(kind: str, weight: Tensor, bits: int, per_channel: bool) -> _SymmetricWeightQuantizer:
    if kind == "ste":
        return MinMaxWeightQuantizer(bits, per_channel)
    if kind == "lsq":
        return LSQWeightQuantizer(weight, bits, per_channel)
    if kind == "sawb":
        return SAWBWeightQuantizer(bits, per_channel)
    raise ValueError(f"unknown weight quantizer '{kind}'")
