"""Quantize the linear layers of one decoder block with one algorithm.

With calibration data, linears are handled in execution order, in groups that read one input (q/k/v, then o, then
gate/up, then down): each group's input statistics are gathered with the earlier groups already quantized
("true sequential" in GPTQ's terms), so a layer compensates the errors of the layers before it. A mixture of
experts' layers of one projection form one group (each expert reads its own input, which no other computes).
Every linear gets its weight SQNR and, with data, its relative output error ||WX - QX||^2 / ||WX||^2 on the
calibration tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from compression.llm import awq as awq_search
from compression.llm import awq_groups
from compression.llm.gptq import HessianAccumulator, gptq
from compression.llm.hqq import hqq
from compression.llm.model import run_block
from compression.llm.moe import parallel_experts
from compression.llm.quantize import QuantizedWeight, WeightFormat, output_error, rtn, weight_sqnr_db


@dataclass
class Recipe:
    """What `quantize_block` needs from a spec, as plain values."""

    algorithm: str
    format: WeightFormat
    scale_dtype: torch.dtype
    gptq: dict = field(default_factory=dict)
    awq: dict = field(default_factory=dict)
    hqq: dict = field(default_factory=dict)


def linear_layers(module: nn.Module) -> dict[str, nn.Linear]:
    return {name: child for name, child in module.named_modules() if isinstance(child, nn.Linear)}


def _input_groups(block: nn.Module, hidden: list[torch.Tensor], kwargs: list[dict]) -> list[list[str]]:
    """Linear names in the order the block calls them, consecutive ones reading the same tensor grouped."""
    calls: list[tuple[str, torch.Tensor]] = []
    hooks = [linear.register_forward_pre_hook(lambda _, args, name=name: calls.append((name, args[0])))
             for name, linear in linear_layers(block).items()]
    try:
        run_block(block, hidden[:1], kwargs[:1])
    finally:
        for hook in hooks:
            hook.remove()
    groups: list[list[str]] = []
    last_input = None
    for name, inputs in calls:
        if any(name in group for group in groups):
            continue
        experts = parallel_experts(name)
        parallel = next((group for group in groups if experts and parallel_experts(group[0]) == experts), None)
        if parallel is not None:  # an expert's layer joins its projection's other experts (`llm.moe`)
            parallel.append(name)
        elif inputs is last_input:
            groups[-1].append(name)
        else:
            groups.append([name])
        last_input = inputs
    unused = [name for name in linear_layers(block) if not any(name in group for group in groups)]
    return groups + [[name] for name in unused]


class _GroupDone(Exception):
    """Raised once the group's last linear has seen its input: the rest of the block need not run."""


def _hessians(block: nn.Module, names: list[str], hidden: list[torch.Tensor], kwargs: list[dict]) -> dict:
    linears = linear_layers(block)
    accumulators = {name: HessianAccumulator(linears[name].in_features) for name in names}
    seen: set[str] = set()

    def record(name: str, inputs: torch.Tensor) -> None:
        accumulators[name].add(inputs)
        seen.add(name)
        if len(seen) == len(names):
            raise _GroupDone

    hooks = [linears[name].register_forward_pre_hook(lambda _, args, name=name: record(name, args[0]))
             for name in names]
    try:
        for states, call_kwargs in zip(hidden, kwargs, strict=True):
            seen.clear()
            try:
                block(states, **call_kwargs)
            except _GroupDone:
                pass
    finally:
        for hook in hooks:
            hook.remove()
    return {name: acc.result() for name, acc in accumulators.items() if acc.tokens}


def _captured_inputs(block: nn.Module, names: list[str], hidden: list[torch.Tensor], kwargs: list[dict]) -> dict:
    """Per submodule name, the (args, kwargs) of each of its calls while the block runs on `hidden`."""
    modules = dict(block.named_modules())
    captured: dict[str, list] = {name: [] for name in names}
    hooks = [modules[name].register_forward_pre_hook(
        lambda _, args, kw, name=name: captured[name].append((args, kw)), with_kwargs=True) for name in names]
    try:
        run_block(block, hidden, kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def _first_input(call: tuple[tuple, dict]) -> torch.Tensor:
    args, kwargs = call
    return args[0] if args else kwargs["hidden_states"]


def apply_awq(block: nn.Module, hidden: list[torch.Tensor], kwargs: list[dict], recipe: Recipe,
              kept_float: frozenset[str] = frozenset()) -> tuple[dict, dict]:
    """Fold searched scales into the block; returns (clip ratio per linear, the search's losses per group and
    the groups left unscaled)."""
    modules = dict(block.named_modules())
    found = awq_groups.scaling_groups(block, hidden[0], kwargs[0], kept_float)
    losses: dict = {}
    for group in found.scaled:
        linears = [modules[name] for name in group.linears]
        calls = _captured_inputs(block, list(dict.fromkeys([group.scored, group.linears[0]])), hidden, kwargs)
        scales, loss, unscaled = awq_search.search_scales(
            linears, modules[group.scored], calls[group.scored],
            [_first_input(call) for call in calls[group.linears[0]]],
            recipe.format.for_columns(linears[0].in_features), recipe.scale_dtype,
            recipe.awq.get("grid", 20), recipe.awq.get("duo_scaling", True))
        awq_search.fold_scales(modules[group.previous], linears + [modules[name] for name in group.passengers],
                               scales, group.rows)
        losses[",".join(group.linears)] = {"folded_into": group.folded_into, "scaled_mse": loss,
                                           "unscaled_mse": unscaled}
        if group.passengers:
            losses[",".join(group.linears)]["also_scaled"] = list(group.passengers)
    if awq_groups.changed(found.output, run_block(block, hidden[:1], kwargs[:1])[0],
                          hidden[0]) > awq_groups.FOLD_TOLERANCE:
        # each fold was checked alone with random scales; this checks them together, with the searched ones
        raise ValueError("AWQ's scales, folded into this block, changed what it computes: use gptq, hqq or rtn")
    weights = {"scaled": sum(modules[name].weight.numel() for group in found.scaled for name in group.linears),
               "unscaled": sum(modules[name].weight.numel() for names in found.unscaled for name in names)}
    metrics = {"groups": losses, "unscaled_groups": [",".join(names) for names in found.unscaled],
               "weights": weights}
    clips = {}
    if recipe.awq.get("clip_search", True):
        names = [name for name in linear_layers(block) if awq_groups.clipped(name) and name not in kept_float]
        calls = _captured_inputs(block, names, hidden, kwargs)
        for name in names:
            if calls[name]:
                inputs = torch.cat([_first_input(c).reshape(-1, modules[name].in_features) for c in calls[name]])
                clips[name] = awq_search.search_clip(modules[name].weight.detach(), inputs,
                                                     recipe.format.for_columns(modules[name].in_features),
                                                     recipe.scale_dtype)
    return clips, metrics


def quantize_weight(weight: torch.Tensor, recipe: Recipe, hessian: torch.Tensor | None,
                    clip: torch.Tensor | float = 1.0) -> QuantizedWeight:
    """`weight` quantized in the recipe's format, its group size fitted to the weight's width (`for_columns`)."""
    fmt = recipe.format.for_columns(weight.shape[1])
    if recipe.algorithm == "gptq":
        if hessian is None:
            raise ValueError("gptq needs calibration data")
        return gptq(weight, hessian, fmt, recipe.scale_dtype, **recipe.gptq)
    if recipe.algorithm == "hqq":
        return hqq(weight, fmt, recipe.scale_dtype, **recipe.hqq)
    return rtn(weight, fmt, recipe.scale_dtype, clip)


@torch.no_grad()
def quantize_block(block: nn.Module, hidden: list[torch.Tensor] | None, kwargs: list[dict],
                   recipe: Recipe, kept_float: frozenset[str] = frozenset()) -> tuple[dict[str, QuantizedWeight], dict]:
    """Quantize every linear of `block` but those `kept_float` in place (its weights become the dequantized
    values) and return the quantized weights by name and the block's metrics."""
    linears = {name: layer for name, layer in linear_layers(block).items() if name not in kept_float}
    metrics: dict = {"layers": {}}
    clips: dict = {}
    if recipe.algorithm == "awq":
        if not hidden:
            raise ValueError("awq needs calibration data")
        clips, metrics["awq"] = apply_awq(block, hidden, kwargs, recipe, kept_float)
    groups = _input_groups(block, hidden, kwargs) if hidden else [[name] for name in linears]
    groups = [kept for group in groups if (kept := [name for name in group if name in linears])]
    quantized = {}
    for names in groups:
        hessians = _hessians(block, names, hidden, kwargs) if hidden else {}
        for name in names:
            weight = linears[name].weight.detach().float()
            layer_recipe, layer = recipe, {}
            if recipe.algorithm == "gptq" and name not in hessians:
                # No calibration token reached it: an expert the router never picked, or a layer whose parent
                # reads its weight instead of calling it (Jamba's dt_proj, unless transformers loaded the model
                # quantized). GPTQ without inputs has nothing to weigh its rounding by: round to nearest.
                layer_recipe, layer = replace(recipe, algorithm="rtn"), {"algorithm": "rtn (no calibration input)"}
            result = quantize_weight(weight, layer_recipe, hessians.get(name), clips.get(name, 1.0))
            dequantized = result.dequantize()
            if result.format != recipe.format:  # its width takes a smaller group, or none (`for_columns`)
                layer["group_size"] = result.format.group_size
            layer["sqnr_db"] = round(weight_sqnr_db(weight, dequantized), 3)
            if name in hessians:
                layer["output_error"] = output_error(weight, dequantized, hessians[name])
            metrics["layers"][name] = layer
            linears[name].weight.data = dequantized.to(linears[name].weight.dtype)
            quantized[name] = result
    return quantized, metrics
