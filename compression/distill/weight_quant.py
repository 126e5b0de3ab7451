"""Weight quantizers used while training, as `torch.nn.utils.parametrize` parametrizations (they work on plain and
exported modules alike, and the full-precision tensor stays the parameter the optimizer updates).

- `UniformWeightQuantizer` (quantized distillation): min-max affine quantization per bucket of consecutive weights
  of each row, recomputed from the current shadow weights every forward; straight-through gradient to the
  shadow weights; optional stochastic rounding while gradients are recorded (training), deterministic otherwise.
- `CodebookWeightQuantizer` (differentiable quantization): every weight is replaced by the nearest of 2^bits
  learned points; the points are the trainable parameters and each receives the summed gradient of its members.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from compression.quant.affine import fake_quantize
from compression.quant.weights import WeightFormat, integer_qparams

# torch.quantile refuses inputs above 2^24 elements; a strided sample of that size gives the same quantiles to
# well within one quantization step.
_QUANTILE_SAMPLE = 1 << 24


def bucketed_format(bits: int, bucket_size: int) -> WeightFormat:
    """Polino's uniform quantization with bucketing: asymmetric min-max per group of `bucket_size` weights."""
    return WeightFormat(dtype="int", bits=bits, symmetric=False, granularity="per_group", group_size=bucket_size,
                        range="minmax")


class UniformWeightQuantizer(nn.Module):
    def __init__(self, fmt: WeightFormat, stochastic: bool = False):
        super().__init__()
        self.fmt = fmt
        self.stochastic = stochastic

    def forward(self, weight: Tensor) -> Tensor:
        params = integer_qparams(weight.detach(), self.fmt)
        # Stochastic rounding is a training-time regulariser; evaluation and export must be deterministic.
        return fake_quantize(weight, params, stochastic=self.stochastic and torch.is_grad_enabled())


def quantile_points(weight: Tensor, count: int) -> Tensor:
    """`count` points at the (j + 1/2) / count quantiles of the weight values (sorted ascending)."""
    values = weight.detach().reshape(-1).float()
    if values.numel() > _QUANTILE_SAMPLE:
        values = values[:: math.ceil(values.numel() / _QUANTILE_SAMPLE)]
    levels = (torch.arange(count, dtype=torch.float32, device=values.device) + 0.5) / count
    return torch.quantile(values, levels)


def nearest_point_indices(weight: Tensor, sorted_points: Tensor) -> Tensor:
    """Index of the nearest point for every weight (points sorted ascending); O(n log k) memory-light."""
    midpoints = (sorted_points[1:] + sorted_points[:-1]) / 2
    return torch.bucketize(weight.detach().contiguous(), midpoints.detach().contiguous())


class CodebookWeightQuantizer(nn.Module):
    def __init__(self, weight: Tensor, bits: int):
        super().__init__()
        self.bits = bits
        self.points = nn.Parameter(quantile_points(weight, 2**bits))

    def sorted_points(self) -> Tensor:
        # Gradient steps may swap two points; sorting (differentiable in the values) keeps nearest-point search valid.
        return torch.sort(self.points).values

    def forward(self, weight: Tensor) -> Tensor:
        points = self.sorted_points()
        return points[nearest_point_indices(weight, points)]

    def encode(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """(indices in the weight's shape, sorted codebook) of the final quantized weight."""
        points = self.sorted_points().detach()
        return nearest_point_indices(weight, points), points


def quantizable_weights(model: nn.Module, skip: list[str]) -> list[str]:
    """Names of the weight matrices / kernels (parameters with >= 2 dims), minus `skip`; others stay float."""
    names = [name for name, parameter in model.named_parameters() if parameter.dim() >= 2]
    unknown = sorted(set(skip) - set(names))
    if unknown:
        raise ValueError(f"skip names {unknown} are not quantizable weights; those are {names}")
    return [name for name in names if name not in skip]


def owner_of(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    owner, _, leaf = name.rpartition(".")
    return (model.get_submodule(owner) if owner else model), leaf


def attach(model: nn.Module, names: list[str], make_quantizer) -> dict[str, nn.Module]:
    """Register `make_quantizer(weight)` as the parametrization of every named weight; returns them by name."""
    quantizers = {}
    for name in names:
        owner, leaf = owner_of(model, name)
        quantizer = make_quantizer(getattr(owner, leaf)).to(getattr(owner, leaf).device)
        parametrize.register_parametrization(owner, leaf, quantizer)
        quantizers[name] = quantizer
    return quantizers


def detach_all(model: nn.Module, names: list[str], leave_parametrized: bool) -> None:
    """Remove the parametrizations; with `leave_parametrized` the parameter keeps the quantized value."""
    for name in names:
        owner, leaf = owner_of(model, name)
        parametrize.remove_parametrizations(owner, leaf, leave_parametrized=leave_parametrized)
