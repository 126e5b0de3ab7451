"""AWQ, activation-aware weight quantization (Lin et al., 2023), for Llama-family decoder blocks.

For each group of linear layers that read one input (q/k/v after the attention norm, o after v, gate/up after the
MLP norm, down after up), search per-input-channel scales s = mean|x|^r / mean|w|^(1-r) (duo scaling; or
mean|x|^r) over a grid of r, scoring each by the MSE of the enclosing module's output with the group's weights
quantized as Q(W * s) / s; the identity scale is scored too, so the chosen scales are never worse than none on the
calibration data. The winner is folded into the previous operation (norm weight or the previous linear's rows),
which leaves the float model's function unchanged. Then, as AutoAWQ's `auto_clip`, each linear but q/k gets a
per-(row, group) clipping ratio that minimises the error of its own output on sampled tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from compression.llm.quantize import WeightFormat, dequantize, qparams, quantize

# (operation whose output feeds the group, the group's linears, the module whose output scores the search)
LLAMA_GROUPS = (
    ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), "self_attn"),
    ("self_attn.v_proj", ("self_attn.o_proj",), "self_attn.o_proj"),
    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"), "mlp"),
    ("mlp.up_proj", ("mlp.down_proj",), "mlp.down_proj"),
)
MLP_INPUT_NORM = "pre_feedforward_layernorm"
NO_CLIP = ("self_attn.q_proj", "self_attn.k_proj")  # their errors pass through softmax; AutoAWQ skips them too


def scaling_groups(block: nn.Module) -> list[tuple[str, tuple[str, ...], str]]:
    """The groups this block supports; v -> o only when every o input column has its own v output row (no
    grouped-query attention), as in AutoAWQ."""
    modules = dict(block.named_modules())
    missing = [name for group in LLAMA_GROUPS for name in (group[0], *group[1], group[2]) if name not in modules]
    if missing:
        raise ValueError(f"AWQ supports Llama-family decoder blocks (Llama, Mistral, Qwen2/3); this block has no "
                         f"{', '.join(sorted(set(missing)))}: use gptq, hqq or rtn")
    weightless = sorted({group[0] for group in LLAMA_GROUPS if getattr(modules[group[0]], "weight", None) is None})
    if weightless:  # OLMo's layer norms have no affine weight
        raise ValueError(f"AWQ folds its scales into the layer before each group of linears; this block's "
                         f"{', '.join(weightless)} ({type(modules[weightless[0]]).__name__}) has no weight to "
                         "fold them into: use gptq, hqq or rtn")
    groups = []
    for previous, linears, scored in LLAMA_GROUPS:
        if previous == "self_attn.v_proj" and modules[previous].out_features != modules[linears[0]].in_features:
            continue
        if previous == "post_attention_layernorm" and MLP_INPUT_NORM in modules:
            # Gemma 2/3/4 normalise the attention's output with post_attention_layernorm and the MLP's input with
            # pre_feedforward_layernorm: the scales fold into the norm that feeds gate/up.
            previous = MLP_INPUT_NORM
        groups.append((previous, linears, scored))
    return groups


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
def fold_scales(previous: nn.Module, linears: list[nn.Linear], scales: torch.Tensor) -> None:
    """previous(x) / s feeds W * s: the float function is unchanged. A norm whose scale is `1 + weight` (Gemma's
    RMSNorm) takes (1 + w) / s - 1; a norm that does not then give its output divided by s is refused."""
    if isinstance(previous, nn.Linear):
        previous.weight.div_(scales.view(-1, 1).to(previous.weight.dtype))
        if previous.bias is not None:
            previous.bias.div_(scales.to(previous.bias.dtype))
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
