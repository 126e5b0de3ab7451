"""GPTQ (Frantar et al., 2022): quantize a linear layer's weight column by column and spread each column's rounding
error over the columns not yet quantized, weighted by the inverse Hessian of the layer-wise objective
||WX - QX||^2 (H = 2 X X^T). Follows the reference implementation (IST-DASLab/gptq `gptq.py`): damping,
lazy block updates, act-order (columns by decreasing diag(H)) with static groups.

With groups and act-order, each group's scale and zero point are fixed from the original weight before any column is
processed ("static groups"), so groups stay contiguous in the stored layout and no `g_idx` is needed (compressed-
tensors' `actorder: weight`, which every vLLM kernel runs at full speed). Without act-order a group's grid is
chosen when its first column is reached, from the error-updated weight, as in the paper.
"""

from __future__ import annotations

import torch

from compression.llm.quantize import QuantizedWeight, WeightFormat, qparams


class HessianAccumulator:
    """Running mean of 2 x x^T over every token seen by a linear layer's input."""

    def __init__(self, columns: int):
        self.hessian = torch.zeros(columns, columns)
        self.tokens = 0

    def add(self, inputs: torch.Tensor) -> None:
        x = inputs.reshape(-1, inputs.shape[-1]).float()
        new_tokens = self.tokens + x.shape[0]
        self.hessian.mul_(self.tokens / new_tokens).add_(x.T @ x, alpha=2.0 / new_tokens)
        self.tokens = new_tokens

    def result(self) -> torch.Tensor:
        return self.hessian


def _inverse_cholesky(hessian: torch.Tensor, damp_percent: float) -> torch.Tensor:
    """Upper Cholesky factor of H^-1 after adding `damp_percent` of the mean diagonal (raised until it factors)."""
    diagonal = torch.arange(hessian.shape[0])
    damp = damp_percent * hessian.diagonal().mean().clamp(min=1e-8)
    for _ in range(6):
        damped = hessian.clone()
        damped[diagonal, diagonal] += damp
        factor, info = torch.linalg.cholesky_ex(damped)
        if not info:
            return torch.linalg.cholesky(torch.cholesky_inverse(factor), upper=True)
        damp *= 10
    raise ValueError("GPTQ: the Hessian is not positive definite even with heavy damping")


def gptq(weight: torch.Tensor, hessian: torch.Tensor, fmt: WeightFormat, scale_dtype: torch.dtype,
         act_order: bool = True, damp_percent: float = 0.01, block_size: int = 128) -> QuantizedWeight:
    rows, columns = weight.shape
    w = weight.detach().float().clone()
    hessian = hessian.float().clone()
    dead = hessian.diagonal() == 0
    hessian[dead, dead] = 1
    w[:, dead] = 0

    group_size = fmt.group_size or columns
    static = fmt.group_size is None or act_order
    scale = torch.zeros(rows, fmt.groups(columns))
    zero = torch.zeros(rows, fmt.groups(columns), dtype=torch.int8) if not fmt.symmetric else None
    if static:
        scale, zero = qparams(w, fmt, scale_dtype)

    # without act-order a group's grid comes from its error-updated columns, which must all lie in one block
    block_size = max(group_size, block_size // group_size * group_size) if not static else block_size
    per_channel = WeightFormat(fmt.bits, None, fmt.symmetric, fmt.kind)
    order = torch.argsort(hessian.diagonal(), descending=True) if act_order else torch.arange(columns)
    w, hessian = w[:, order], hessian[order][:, order]
    hinv = _inverse_cholesky(hessian, damp_percent)
    codes_t = torch.zeros(columns, rows, dtype=torch.int8)

    for start in range(0, columns, block_size):
        end = min(start + block_size, columns)
        # columns as contiguous rows: each step touches one row and a rank-1 update of the rows after it
        block = w[:, start:end].T.contiguous()
        errors = torch.zeros_like(block)
        hinv_block = hinv[start:end, start:end]
        group_scales = scale.T.contiguous()
        group_zeros = zero.T.float().contiguous() if zero is not None else None
        for i in range(end - start):
            column = int(order[start + i])
            group = column // group_size
            if not static and column % group_size == 0:
                group_scale, group_zero = qparams(block[i: i + group_size].T, per_channel, scale_dtype)
                scale[:, group] = group_scale[:, 0]
                group_scales[group] = group_scale[:, 0]
                if zero is not None:
                    zero[:, group] = group_zero[:, 0]
                    group_zeros[group] = group_zero[:, 0].float()
            q = torch.round(block[i] / group_scales[group])
            if group_zeros is not None:
                q.add_(group_zeros[group])
            q.clamp_(fmt.qmin, fmt.qmax)
            codes_t[start + i] = q.to(torch.int8)
            dequantized = (q - group_zeros[group] if group_zeros is not None else q) * group_scales[group]
            error = (block[i] - dequantized) / hinv_block[i, i]
            block[i:].sub_(torch.outer(hinv_block[i, i:], error))
            errors[i] = error
        w[:, end:] -= errors.T @ hinv[start:end, end:]

    inverse = torch.argsort(order)
    return QuantizedWeight(codes_t[inverse].T.contiguous(), scale.to(scale_dtype), zero, fmt)
