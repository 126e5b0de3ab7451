"""SmoothQuant activation smoothing for W8A8 (Xiao et al., 2023), applied to an exported graph before quantizing.

Transformer activations have a few channels 10-100x larger than the rest; one per-tensor int8 scale then spends
its grid on them and rounds everything else to a handful of levels. SmoothQuant moves that range into the
weights, which are quantized per output channel and absorb it easily: for a linear `y = x W^T` and per input
channel factors `s`, `y = (x / s) (W * s)^T` exactly, with

    s_c = max|x_c|^alpha / max|W_:,c|^(1 - alpha)      (alpha 0.5 balances the two; max|x_c| from calibration)

Linears reading the same tensor (query, key, value) share one `s` (the max over all their weights). The division
is folded into the producing LayerNorm's weight and bias when that LayerNorm feeds only those linears (no extra op
at run time, the usual case in transformers); otherwise a `mul` by 1/s is inserted before them.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import fx

aten = torch.ops.aten
LAYER_NORM_WEIGHT, LAYER_NORM_BIAS = 2, 3  # positions in aten.layer_norm(input, shape, weight, bias, eps)


def smooth_linears(gm: fx.GraphModule, calibration: Iterable[tuple[torch.Tensor, ...]], alpha: float) -> dict:
    """Smooth every group of linears of `gm` (in place) with factors computed on `calibration`.

    Returns the report for the metrics: {"alpha", "groups": number of smoothed inputs, "folded_into_layer_norm",
    "largest_factor"}."""
    groups = _linear_groups(gm)
    act_max = _input_abs_max(gm, groups, calibration)
    folded, largest = 0, 1.0
    for source, linears in groups.items():
        if source not in act_max:
            continue
        weights = [_get(gm, linear.args[1].target) for linear in linears]
        weight_max = torch.stack([w.detach().abs().amax(dim=0) for w in weights]).amax(dim=0)
        factors = _factors(act_max[source], weight_max, alpha)
        for linear, weight in zip(linears, weights):
            _set(gm, linear.args[1].target, weight.detach() * factors)
        if _fold_into_layer_norm(gm, source, linears, factors):
            folded += 1
        else:
            _insert_division(gm, source, linears, factors)
        largest = max(largest, float(factors.max()))
    gm.recompile()
    return {"alpha": alpha, "groups": len(act_max), "folded_into_layer_norm": folded,
            "largest_factor": round(largest, 2)}


def _factors(act_max: torch.Tensor, weight_max: torch.Tensor, alpha: float) -> torch.Tensor:
    factors = act_max.clamp(min=1e-5).pow(alpha) / weight_max.clamp(min=1e-5).pow(1 - alpha)
    # A channel that never fires or has no weight carries no information to balance.
    unused = (act_max == 0) | (weight_max == 0)
    return torch.where(unused, torch.ones_like(factors), factors).clamp(min=1e-5)


def _linear_groups(gm: fx.GraphModule) -> dict[fx.Node, list[fx.Node]]:
    """Linears with a parameter weight, grouped by the tensor they read."""
    groups: dict[fx.Node, list[fx.Node]] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == aten.linear.default:
            weight = node.args[1]
            if isinstance(weight, fx.Node) and weight.op == "get_attr" and isinstance(node.args[0], fx.Node):
                groups.setdefault(node.args[0], []).append(node)
    return groups


def _input_abs_max(gm: fx.GraphModule, groups: dict, calibration) -> dict[fx.Node, torch.Tensor]:
    watched = set(groups)
    act_max: dict[fx.Node, torch.Tensor] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, node):
            result = super().run_node(node)
            if node in watched and isinstance(result, torch.Tensor) and result.is_floating_point():
                channel_max = result.detach().abs().reshape(-1, result.shape[-1]).amax(dim=0)
                act_max[node] = channel_max if node not in act_max else torch.maximum(act_max[node], channel_max)
            return result

    recorder = Recorder(gm)
    with torch.no_grad():
        for inputs in calibration:
            recorder.run(*inputs)
    return act_max


def _fold_into_layer_norm(gm: fx.GraphModule, source: fx.Node, linears: list[fx.Node],
                          factors: torch.Tensor) -> bool:
    if source.op != "call_function" or source.target != aten.layer_norm.default or set(source.users) != set(linears):
        return False
    args = list(source.args) + [None] * (4 - len(source.args))
    weight, bias = args[LAYER_NORM_WEIGHT], args[LAYER_NORM_BIAS]
    if not all(isinstance(t, fx.Node) and t.op == "get_attr" for t in (weight, bias)):
        return False
    if len(weight.users) != 1 or len(bias.users) != 1:
        return False  # a LayerNorm parameter shared with another layer cannot absorb this group's factors
    for node in (weight, bias):
        _set(gm, node.target, _get(gm, node.target).detach() / factors)
    return True


def _insert_division(gm: fx.GraphModule, source: fx.Node, linears: list[fx.Node], factors: torch.Tensor) -> None:
    name = f"smoothquant_inverse_{sum(1 for key in gm._buffers if key.startswith('smoothquant_inverse_'))}"
    gm.register_buffer(name, (1 / factors).contiguous())
    with gm.graph.inserting_before(linears[0]):
        smoothed = gm.graph.call_function(aten.mul.Tensor, (source, gm.graph.get_attr(name)))
    for linear in linears:
        linear.args = (smoothed, *linear.args[1:])


def _get(gm: fx.GraphModule, attr: str) -> torch.Tensor:
    owner, _, leaf = attr.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, leaf)


def _set(gm: fx.GraphModule, attr: str, value: torch.Tensor) -> None:
    """Replace (never modify in place: the tensor may be shared with the caller's model) a parameter or buffer."""
    owner, _, leaf = attr.rpartition(".")
    holder = gm.get_submodule(owner) if owner else gm
    if leaf in holder._parameters:
        holder._parameters[leaf] = torch.nn.Parameter(value.contiguous(), requires_grad=False)
    else:
        holder._buffers[leaf] = value.contiguous()
