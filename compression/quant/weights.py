"""Weight quantization for PTQ: integer (2-8 bit affine, any granularity, min-max or MSE clip) and float casts
(FP8 E4M3/E5M2 with a per-output-channel scale, FP16, BF16).

A quantized weight keeps what a deployable format stores (integer codes and their parameters, or the cast
tensor and its scale) next to the dequantized float tensor the simulated model runs with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from compression.quant.affine import (QParams, dequantize, fake_quantize, min_max, qparams_from_min_max, quantize,
                                      to_groups)

FLOAT_DTYPES = {"fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2, "fp16": torch.float16,
                "bf16": torch.bfloat16}
MSE_CLIP_RATIOS = torch.linspace(0.3, 1.0, 36)


@dataclass(frozen=True)
class WeightFormat:
    dtype: str = "int"  # "int" or a key of FLOAT_DTYPES
    bits: int = 8
    symmetric: bool = True
    granularity: str = "per_channel"  # per_tensor | per_channel | per_group
    group_size: int = 64
    range: str = "minmax"  # minmax | mse

    @classmethod
    def from_spec(cls, spec, bits: int | None = None) -> "WeightFormat":
        return cls(spec.dtype, bits or spec.bits, spec.symmetric, spec.granularity, spec.group_size, spec.range)

    def with_bits(self, bits: int) -> "WeightFormat":
        return replace(self, bits=bits)

    @property
    def storage_bits(self) -> int:
        if self.dtype == "int":
            return self.bits
        return 8 if self.dtype.startswith("fp8") else 16

    def describe(self) -> str:
        if self.dtype != "int":
            return self.dtype
        group = f"g{self.group_size}" if self.granularity == "per_group" else self.granularity
        return f"int{self.bits} {'sym' if self.symmetric else 'asym'} {group}"


@dataclass
class QuantizedWeight:
    format: WeightFormat
    dequantized: torch.Tensor  # float32, the weight's shape: what the simulated model computes with
    codes: torch.Tensor | None = None  # integer formats: int8/uint8 codes in the weight's shape
    qparams: QParams | None = None
    cast: torch.Tensor | None = None  # float formats: the weight in the target dtype (FP8: divided by `scale`)
    scale: torch.Tensor | None = None  # FP8 only: per-output-channel scale


def _granularity(fmt: WeightFormat, weight: torch.Tensor) -> dict:
    if fmt.granularity == "per_channel":
        return {"axis": 0}
    if fmt.granularity == "per_group":
        return {"group_size": fmt.group_size}
    return {}


def _per_range_error(error: torch.Tensor, granularity: dict) -> torch.Tensor:
    """Squared error summed over the elements sharing one scale."""
    if "group_size" in granularity:
        return to_groups(error, granularity["group_size"]).sum(-1)
    if "axis" in granularity:
        return error.reshape(error.shape[0], -1).sum(1)
    return error.sum()


def integer_qparams(weight: torch.Tensor, fmt: WeightFormat) -> QParams:
    """Scales are rounded to bfloat16, the precision the packed format stores them in (half the bytes of fp32,
    which matters for small groups: a g16 fp32 scale costs 2 bits per weight), so the simulated model and the
    deployed one use the very same grid."""
    params = _fp32_qparams(weight, fmt)
    return replace(params, scale=params.scale.to(torch.bfloat16).float())


def _fp32_qparams(weight: torch.Tensor, fmt: WeightFormat) -> QParams:
    granularity = _granularity(fmt, weight)
    lo, hi = min_max(weight, **granularity)
    make = lambda ratio: qparams_from_min_max(lo * ratio, hi * ratio, fmt.bits, symmetric=fmt.symmetric,
                                              **granularity)
    if fmt.range == "minmax":
        return make(1.0)
    # Each channel/group keeps the clip ratio with the least squared error.
    best_ratio = torch.ones_like(lo)
    best_error = torch.full_like(lo, float("inf"))
    for ratio in MSE_CLIP_RATIOS.tolist():
        error = _per_range_error((fake_quantize(weight, make(ratio)) - weight).pow(2), granularity)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_ratio = torch.where(better, torch.full_like(best_ratio, ratio), best_ratio)
    return make(best_ratio)


def quantize_weight(weight: torch.Tensor, fmt: WeightFormat) -> QuantizedWeight:
    weight = weight.detach().float()
    if fmt.dtype == "int":
        params = integer_qparams(weight, fmt)
        codes = quantize(weight, params)
        return QuantizedWeight(fmt, dequantize(codes, params), codes=codes, qparams=params)
    dtype = FLOAT_DTYPES[fmt.dtype]
    if fmt.dtype.startswith("fp8"):
        # FP8's range is narrow (E4M3 tops out at 448): scale each output channel onto it.
        amax = weight.reshape(weight.shape[0], -1).abs().amax(1).clamp(min=torch.finfo(torch.float32).tiny)
        scale = (amax / torch.finfo(dtype).max).reshape(-1, *([1] * (weight.dim() - 1)))
        cast = (weight / scale).to(dtype)
        return QuantizedWeight(fmt, cast.float() * scale, cast=cast, scale=scale.reshape(-1))
    cast = weight.to(dtype)
    return QuantizedWeight(fmt, cast.float(), cast=cast)
