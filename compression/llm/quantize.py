"""Weight-only quantization grids for LLM linear layers: signed integers per output channel or per group of input
columns, and FP8 E4M3 per output channel.

Integer codes follow compressed-tensors (what vLLM and transformers read): a b-bit code is a signed int8 in
[-2^(b-1), 2^(b-1) - 1] and `w ~= (code - zero_point) * scale`, with one scale (and, when asymmetric, one integer
zero point) per output row and group of `group_size` consecutive input columns. Symmetric grids put zero at 0 and
use the half-step GPTQ convention `scale = max|w| / ((qmax - qmin) / 2)`, so max|w| lands on the clamped last code.
FP8 codes are float8_e4m3fn with `w ~= code * scale`, `scale = max|w| / 448` per row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

FP8_MAX = 448.0
GROUP_SIZES = (128, 64, 32)  # what a spec may ask for, largest first


@dataclass(frozen=True)
class WeightFormat:
    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = True
    kind: str = "int"  # "int" or "fp8"

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1))

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1

    def groups(self, columns: int) -> int:
        """Groups per row; per-channel formats have one."""
        if self.group_size is None:
            return 1
        if columns % self.group_size:
            raise ValueError(f"{columns} input columns are not a multiple of group size {self.group_size}")
        return columns // self.group_size

    def for_columns(self, columns: int) -> WeightFormat:
        """This format for a layer of `columns` input columns: the spec's group size where it divides them, else
        the largest smaller one of GROUP_SIZES that does (SmolLM's 576-wide layers take 64 for 128), else one
        scale per output channel (Mamba's 48-wide dt_proj); a group never straddles two rows."""
        if self.group_size is None or columns % self.group_size == 0:
            return self
        fitting = next((size for size in GROUP_SIZES if size < self.group_size and columns % size == 0), None)
        return replace(self, group_size=fitting)


@dataclass
class QuantizedWeight:
    """A quantized [out, in] weight: `codes` int8 (or float8_e4m3fn) [out, in], `scale` [out, groups] in the
    storage dtype, `zero_point` int8 [out, groups] or None (symmetric and FP8)."""

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    format: WeightFormat

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.codes, self.scale.float(), self.zero_point, self.format).to(dtype)


def _expand(per_group: torch.Tensor, columns: int) -> torch.Tensor:
    """[out, groups] -> [out, columns], each group's value repeated over its columns."""
    return per_group.repeat_interleave(columns // per_group.shape[1], dim=1)


def qparams(weight: torch.Tensor, fmt: WeightFormat, scale_dtype: torch.dtype,
            clip: torch.Tensor | float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Min-max scale and zero point per row and group of `weight` [out, in]; `clip` (scalar or [out, groups])
    shrinks the range. The scale is rounded to `scale_dtype` first, so codes are computed with the stored scale."""
    rows, columns = weight.shape
    grouped = weight.float().reshape(rows, fmt.groups(columns), -1)
    if fmt.kind == "fp8":
        scale = grouped.abs().amax(dim=2) * clip / FP8_MAX
        return scale.clamp(min=1e-12).to(scale_dtype).float(), None
    if fmt.symmetric:
        scale = grouped.abs().amax(dim=2) * clip / ((fmt.qmax - fmt.qmin) / 2)
        return scale.clamp(min=1e-12).to(scale_dtype).float(), None
    low = grouped.amin(dim=2).clamp(max=0) * clip
    high = grouped.amax(dim=2).clamp(min=0) * clip
    scale = ((high - low) / (fmt.qmax - fmt.qmin)).clamp(min=1e-12).to(scale_dtype).float()
    zero = (fmt.qmin - torch.round(low / scale)).clamp(fmt.qmin, fmt.qmax)
    return scale, zero.to(torch.int8)


def quantize(weight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
             fmt: WeightFormat) -> torch.Tensor:
    """Codes of `weight` [out, in] (or a column block [out, k] with per-column scale [out, k]) on the given grid."""
    columns = weight.shape[1]
    scale = _expand(scale, columns) if scale.shape[1] != columns else scale
    if fmt.kind == "fp8":
        return (weight.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    codes = torch.round(weight.float() / scale)
    if zero_point is not None:
        zero = _expand(zero_point, columns) if zero_point.shape[1] != columns else zero_point
        codes = codes + zero.float()
    return codes.clamp(fmt.qmin, fmt.qmax).to(torch.int8)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None,
               fmt: WeightFormat) -> torch.Tensor:
    columns = codes.shape[1]
    scale = _expand(scale.float(), columns) if scale.shape[1] != columns else scale.float()
    values = codes.float()
    if zero_point is not None:
        zero = _expand(zero_point, columns) if zero_point.shape[1] != columns else zero_point
        values = values - zero.float()
    return values * scale


def rtn(weight: torch.Tensor, fmt: WeightFormat, scale_dtype: torch.dtype,
        clip: torch.Tensor | float = 1.0) -> QuantizedWeight:
    """Round to nearest on the min-max grid (optionally clipped)."""
    scale, zero = qparams(weight, fmt, scale_dtype, clip)
    return QuantizedWeight(quantize(weight, scale, zero, fmt), scale.to(scale_dtype), zero, fmt)


def output_error(weight: torch.Tensor, dequantized: torch.Tensor, hessian: torch.Tensor) -> float:
    """Relative layer-output error ||WX - QX||^2 / ||WX||^2 from the input Gram matrix H = X X^T (the objective
    GPTQ minimises), without keeping X."""
    delta = (weight.float() - dequantized.float())
    numerator = torch.einsum("oi,ij,oj->", delta, hessian, delta)
    denominator = torch.einsum("oi,ij,oj->", weight.float(), hessian, weight.float())
    return float(numerator / denominator.clamp(min=1e-20))


def weight_sqnr_db(weight: torch.Tensor, dequantized: torch.Tensor) -> float:
    noise = (weight.float() - dequantized.float()).pow(2).sum().clamp(min=1e-20)
    return float(10 * torch.log10(weight.float().pow(2).sum() / noise))
