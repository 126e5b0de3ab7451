"""Uniform affine quantization math shared by PTQ, QAT, distillation and the packed formats.

    q = clamp(round(x / scale) + zero_point, qmin, qmax)        x_hat = (q - zero_point) * scale

Granularity is given by two keywords used the same way everywhere in this module:

- per tensor:  axis=None, group_size=None -> scale and zero_point are 0-d tensors;
- per channel: axis=k                     -> 1-d tensors of length x.shape[k];
- per group:   group_size=g               -> tensors of shape (rows, ceil(cols / g)): x is viewed as
  (rows, cols) = (x.shape[0], numel / x.shape[0]) (a 1-d x is one row), i.e. groups of g consecutive elements of
  the flattened input dimensions of each output channel (Polino et al.'s "bucketing" per row). A last, shorter
  group is padded with zeros, which never changes its range because every range here includes zero.

Ranges always include zero so that zero (padding, ReLU outputs, pruned weights) is exactly representable.
Symmetric quantization uses scale = max|x| / qmax with zero_point 0, so +max|x| and -max|x| are both on the grid
(the (qmax - qmin) / 2 divisor some libraries use clips the positive extreme by half a step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Smallest scale allowed: an all-zero channel would otherwise divide by zero.
SCALE_EPS = torch.finfo(torch.float32).eps


def qrange(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Integer range of a `bits`-bit code. `narrow` drops the most negative signed code (-127..127 for int8), which
    keeps a symmetric grid symmetric."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    if not signed:
        return 0, 2**bits - 1
    qmax = 2 ** (bits - 1) - 1
    return (-qmax if narrow else -qmax - 1), qmax


@dataclass(frozen=True)
class QParams:
    """Everything needed to quantize and dequantize a tensor. `zero_point` is integer-valued but kept float so it
    broadcasts in float arithmetic."""

    scale: Tensor
    zero_point: Tensor
    qmin: int
    qmax: int
    axis: int | None = None
    group_size: int | None = None

    def __post_init__(self):
        if self.axis is not None and self.group_size is not None:
            raise ValueError("choose per-channel (axis) or per-group (group_size), not both")

    @property
    def bits(self) -> int:
        return math.ceil(math.log2(self.qmax - self.qmin + 1))

    @property
    def signed(self) -> bool:
        return self.qmin < 0


def _rows(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1) if x.dim() >= 2 else x.reshape(1, -1)


def to_groups(x: Tensor, group_size: int) -> Tensor:
    """View `x` as (rows, groups, group_size), zero-padding the last group of every row."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    rows = _rows(x)
    pad = -rows.shape[1] % group_size
    if pad:
        rows = torch.nn.functional.pad(rows, (0, pad))
    return rows.reshape(rows.shape[0], -1, group_size)


def from_groups(grouped: Tensor, shape: torch.Size) -> Tensor:
    """Inverse of `to_groups`: drop the padding and restore `shape`."""
    rows = grouped.reshape(grouped.shape[0], -1)
    cols = math.prod(shape) // rows.shape[0]
    return rows[:, :cols].reshape(shape)


def min_max(x: Tensor, axis: int | None = None, group_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Minimum and maximum of `x` at the given granularity (shapes as described in the module docstring)."""
    if group_size is not None:
        grouped = to_groups(x, group_size)
        return grouped.amin(dim=-1), grouped.amax(dim=-1)
    if axis is None:
        return x.min(), x.max()
    axis = axis % x.dim()
    other_dims = [d for d in range(x.dim()) if d != axis]
    return x.amin(dim=other_dims), x.amax(dim=other_dims)


def qparams_from_min_max(min_val: Tensor, max_val: Tensor, bits: int, *, symmetric: bool,
                         signed: bool | None = None, narrow: bool = False, axis: int | None = None,
                         group_size: int | None = None) -> QParams:
    """Scale and zero point covering [min_val, max_val] (extended to include zero).

    `signed` defaults to True for symmetric (zero point 0 in the middle of the code) and False for asymmetric.
    """
    signed = symmetric if signed is None else signed
    qmin, qmax = qrange(bits, signed, narrow)
    min_neg = torch.clamp(min_val.detach().float(), max=0.0)
    max_pos = torch.clamp(max_val.detach().float(), min=0.0)
    if symmetric:
        max_abs = torch.maximum(-min_neg, max_pos)
        if signed:
            scale = max_abs / qmax
            zero_point = torch.zeros_like(scale)
        else:
            # An unsigned symmetric grid is centred on the middle code (128 for uint8).
            scale = 2 * max_abs / (qmax - qmin)
            zero_point = torch.full_like(scale, float((qmin + qmax + 1) // 2))
        scale = scale.clamp(min=SCALE_EPS)
    else:
        scale = ((max_pos - min_neg) / (qmax - qmin)).clamp(min=SCALE_EPS)
        zero_point = (qmin - torch.round(min_neg / scale)).clamp(qmin, qmax)
    return QParams(scale, zero_point, qmin, qmax, axis, group_size)


def qparams_for(x: Tensor, bits: int, *, symmetric: bool, signed: bool | None = None, narrow: bool = False,
                axis: int | None = None, group_size: int | None = None) -> QParams:
    """Min-max quantization parameters of `x` itself."""
    lo, hi = min_max(x.detach(), axis, group_size)
    return qparams_from_min_max(lo, hi, bits, symmetric=symmetric, signed=signed, narrow=narrow, axis=axis,
                                group_size=group_size)


def _apply(x: Tensor, params: QParams, fn) -> Tensor:
    """Run fn(x_view, scale_view, zero_point_view) with the parameters broadcast against x, return in x's shape."""
    if params.group_size is not None:
        grouped = to_groups(x, params.group_size)
        out = fn(grouped, params.scale.unsqueeze(-1), params.zero_point.unsqueeze(-1))
        return from_groups(out, x.shape)
    if params.axis is None:
        return fn(x, params.scale, params.zero_point)
    shape = [1] * x.dim()
    shape[params.axis % x.dim()] = -1
    return fn(x, params.scale.reshape(shape), params.zero_point.reshape(shape))


def round_ste(x: Tensor) -> Tensor:
    """Round to nearest in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def stochastic_round_ste(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Round up with probability frac(x) (unbiased: E[round(x)] = x), identity gradient."""
    noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + (torch.floor(x + noise) - x).detach()


def _code_dtype(params: QParams) -> torch.dtype:
    if params.qmin >= 0 and params.qmax <= 255:
        return torch.uint8
    if params.qmin >= -128 and params.qmax <= 127:
        return torch.int8
    return torch.int32


def quantize(x: Tensor, params: QParams, *, stochastic: bool = False,
             generator: torch.Generator | None = None) -> Tensor:
    """Integer codes of `x` (int8 for signed, uint8 for unsigned codes of up to 8 bits, else int32)."""
    def codes(v, scale, zero_point):
        scaled = v.detach().float() / scale
        rounded = stochastic_round_ste(scaled, generator) if stochastic else torch.round(scaled)
        return torch.clamp(rounded + zero_point, params.qmin, params.qmax)

    return _apply(x, params, codes).to(_code_dtype(params))


def dequantize(q: Tensor, params: QParams) -> Tensor:
    """Float32 values of integer codes."""
    return _apply(q.float(), params, lambda v, scale, zero_point: (v - zero_point) * scale)


def fake_quantize(x: Tensor, params: QParams, *, stochastic: bool = False,
                  generator: torch.Generator | None = None) -> Tensor:
    """Quantize then dequantize, differentiably.

    Rounding uses the straight-through estimator and the clamp is ordinary autograd, so d out / d x is 1 inside the
    clip range and 0 outside; if `params.scale` requires grad it receives the LSQ step-size gradient.
    """
    rounder = (lambda v: stochastic_round_ste(v, generator)) if stochastic else round_ste

    def fake(v, scale, zero_point):
        codes = torch.clamp(rounder(v / scale) + zero_point, params.qmin, params.qmax)
        return (codes - zero_point) * scale

    return _apply(x, params, fake).to(x.dtype)


def sqnr_db(reference: Tensor, approximation: Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB: 10 log10(sum(x^2) / sum((x - x_hat)^2))."""
    reference = reference.detach().double()
    noise = (reference - approximation.detach().double()).pow(2).sum()
    if noise == 0:
        return math.inf
    return float(10 * torch.log10(reference.pow(2).sum() / noise))
