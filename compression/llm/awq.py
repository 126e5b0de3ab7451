"""AWQ, activation-aware weight quantization (Lin et al., 2023), for any decoder block of linear layers.

For each group of linear layers that read one input (q/k/v after the attention norm, o after v, gate/up after
the MLP norm, down after up; `compression.llm.awq_groups` finds them in the block's own forward), search
per-input-channel scales s = mean|x|^r / mean|w|^(1-r) (duo scaling; or mean|x|^r) over a grid of r, scoring each
by the MSE of the enclosing module's output with the group's weights quantized as Q(W * s) / s; the identity scale
is scored too, so the chosen scales are never worse than none on the calibration data. The winner is folded into
the previous operation (norm weight or the previous linear's rows), which leaves the float model's function
unchanged. Then, as AutoAWQ's `auto_clip`, each linear but those feeding the attention's softmax (q/k) gets a
per-(row, group) clipping ratio that minimises the error of its own output on sampled tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from compression.llm.quantize import WeightFormat, dequantize, qparams, quantize


def fake_quantize(weight: torch.Tensor, fmt: WeightFormat, scale_dtype: torch.dtype,
                  clip: torch.Tensor | float = 1.0) -> torch.Tensor:
    scale, zero = qparams(weight, fmt, scale_dtype, clip)
    return dequantize(quantize(weight, scale, zero, fmt), scale, zero, fmt).to(weight.dtype)


def _run(module: nn.Module, calls: list[tuple[tuple, dict]]) -> list[torch.Tensor]:
    outputs = []
    for args, kwargs in calls:
        out = module(*args, **kwargs)
        outputs.append(out[0] if isinstance(out, tuple) else out)
    return outputs


def _mean_abs_weight(linears: list[nn.Linear], fmt: WeightFormat) -> torch.Tensor:
    """Per input channel, the mean over rows of |w| relative to its group's max (AutoAWQ `get_weight_scale`)."""
    weight = torch.cat([linear.weight.detach().float() for linear in linears])
    rows, columns = weight.shape
    grouped = weight.abs().reshape(rows, fmt.groups(columns), -1)
    relative = grouped / grouped.amax(dim=2, keepdim=True).clamp(min=1e-12)
    return relative.reshape(rows, columns).mean(dim=0)


@torch.no_grad()
def search_scales(linears: list[nn.Linear], scored: nn.Module, calls: list[tuple[tuple, dict]],
                  inputs: list[torch.Tensor], fmt: WeightFormat, scale_dtype: torch.dtype, grid: int,
                  duo_scaling: bool) -> tuple[torch.Tensor, float, float]:
    """(best scales, loss with them, loss without scaling)."""
    x_mean = torch.cat([x.reshape(-1, x.shape[-1]).abs().float() for x in inputs]).mean(dim=0)
    w_mean = _mean_abs_weight(linears, fmt)
    reference = _run(scored, calls)
    originals = [linear.weight.detach().clone() for linear in linears]

    def loss_with(scales: torch.Tensor) -> float:
        for linear, original in zip(linears, originals):
            scaled = original.float() * scales
            linear.weight.data = (fake_quantize(scaled, fmt, scale_dtype) / scales).to(original.dtype)
        outputs = _run(scored, calls)
        total = sum(float((out.float() - ref.float()).pow(2).sum()) for out, ref in zip(outputs, reference))
        return total / sum(ref.numel() for ref in reference)

    identity = torch.ones_like(x_mean)
    unscaled = best_loss = loss_with(identity)
    best = identity
    for step in range(grid):
        ratio = step / grid
        scales = x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4) if duo_scaling else x_mean.pow(ratio)
        scales = scales.clamp(min=1e-4)
        scales = scales / (scales.max() * scales.min()).sqrt()
        loss = loss_with(scales)
        if loss < best_loss:
            best, best_loss = scales, loss
    for linear, original in zip(linears, originals):
        linear.weight.data = original
    return best, best_loss, unscaled


@torch.no_grad()
def fold_scales(previous: nn.Module, linears: list[nn.Module], scales: torch.Tensor,
                rows: tuple[int, int] | None = None) -> None:
    """previous(x) / s feeds W * s: the float function is unchanged. `previous` is a linear layer (only its output
    rows [start, stop) when `rows` is given: the up half of a fused gate_up_proj) or a norm; a norm whose scale is
    `1 + weight` (Gemma's RMSNorm) takes (1 + w) / s - 1, and one that does not then give its output divided by s
    is refused. `linears` are the modules whose weight columns take s (every reader of that output)."""
    if isinstance(previous, nn.Linear):
        start, stop = rows or (0, previous.out_features)
        previous.weight[start:stop].div_(scales.view(-1, 1).to(previous.weight.dtype))
        if previous.bias is not None:
            previous.bias[start:stop].div_(scales.to(previous.bias.dtype))
    else:
        probe = torch.randn(4, scales.numel(), generator=torch.Generator().manual_seed(0)).to(previous.weight.dtype)
        expected = previous(probe).float() / scales
        original = previous.weight.detach().clone()
        offset = _weight_offset(previous, probe)
        previous.weight.copy_(((original.float() + offset) / scales - offset).to(original.dtype))
        if getattr(previous, "bias", None) is not None:
            previous.bias.div_(scales.to(previous.bias.dtype))
        if not torch.allclose(previous(probe).float(), expected, rtol=1e-3, atol=1e-5):
            raise ValueError(f"AWQ folds its scales into the layer before each group of linears; this block's "
                             f"{type(previous).__name__} does not scale its output by its weight: use gptq, hqq or "
                             "rtn")
    for linear in linears:
        linear.weight.mul_(scales.view(1, -1).to(linear.weight.dtype))


def _weight_offset(norm: nn.Module, probe: torch.Tensor) -> float:
    """1.0 for a norm computing x_hat * (1 + weight) (its output stays nonzero with weight and bias at 0), else 0."""
    saved = {name: tensor.detach().clone() for name, tensor in norm.named_parameters(recurse=False)}
    for tensor in norm.parameters(recurse=False):
        tensor.zero_()
    try:
        return 1.0 if norm(probe).abs().amax() > 0 else 0.0
    finally:
        for name, tensor in norm.named_parameters(recurse=False):
            tensor.copy_(saved[name])


@torch.no_grad()
def search_clip(weight: torch.Tensor, inputs: torch.Tensor, fmt: WeightFormat, scale_dtype: torch.dtype,
                grid: int = 20, max_shrink: float = 0.5, tokens: int = 512, row_chunk: int = 256) -> torch.Tensor:
    """Per (row, group) clipping ratio in [1 - max_shrink, 1] minimising the group's own output error."""
    rows, columns = weight.shape
    groups = fmt.groups(columns)
    x = inputs.reshape(-1, columns).float()
    x = x[torch.linspace(0, len(x) - 1, min(tokens, len(x))).long()]
    x = x.reshape(len(x), groups, -1)
    best_ratios = []
    for start in range(0, rows, row_chunk):
        w = weight[start:start + row_chunk].float()
        w_grouped = w.reshape(len(w), groups, -1)
        reference = torch.einsum("rgc,ngc->rng", w_grouped, x)
        best_error = torch.full((len(w), groups), float("inf"))
        best_ratio = torch.ones(len(w), groups)
        for step in range(int(max_shrink * grid)):
            ratio = 1 - step / grid
            quantized = fake_quantize(w, fmt, scale_dtype, ratio).reshape(len(w), groups, -1)
            error = (torch.einsum("rgc,ngc->rng", quantized, x) - reference).pow(2).mean(dim=1)
            better = error < best_error
            best_error = torch.where(better, error, best_error)
            best_ratio = torch.where(better, torch.full_like(best_ratio, ratio), best_ratio)
        best_ratios.append(best_ratio)
    return torch.cat(best_ratios)
