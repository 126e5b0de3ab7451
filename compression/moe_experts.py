"""Mixture-of-experts layers made exportable and compressible: each expert as its own `nn.Linear` layers.

transformers 5 keeps a mixture of experts' weights as one 3-D tensor per projection ([experts, out, in]: Mixtral,
Qwen2/3-MoE, OLMoE, DeepSeek, GPT-OSS, Granite-MoE, ... every experts class its `use_experts_implementation`
decorator builds). Their eager forward loops over the experts a batch routes to (`nonzero`, a data-dependent
shape torch.export cannot trace), and no method here works on 3-D tensors: int8 PTQ, pruning, iPQ and QAT all
work on linear and convolution layers.

So before export each experts module's stacked tensors become `nn.Linear` layers, one per expert and projection
(`experts.gate_up_proj.3` is expert 3's gate-and-up layer), and its forward runs every expert on every token,
weighting each expert's output by the token's routing weight for it (zero where the router did not pick it).
That is the same sum the sparse forward computes, with static shapes; it costs (experts / experts per token)
times the expert compute of the sparse forward, which a compression job's calibration and evaluation batches
afford and which the fp32 program and the compressed one both pay, so their speed is compared like for like.
"""

from __future__ import annotations

import types

import torch

# The stacked projections transformers' experts classes hold: gate and up concatenated (or interleaved, GPT-OSS),
# up alone (non-gated experts), and down.
INPUT_PROJECTIONS = ("gate_up_proj", "up_proj")
OUTPUT_PROJECTION = "down_proj"


def is_stacked_experts(module: torch.nn.Module) -> bool:
    """An experts module of transformers' `use_experts_implementation` layout: its `has_gate`/`is_transposed`
    flags, and a 3-D down projection."""
    down = getattr(module, OUTPUT_PROJECTION, None)
    return (hasattr(module, "has_gate") and hasattr(module, "is_transposed")
            and isinstance(down, torch.nn.Parameter) and down.dim() == 3)


def is_router(modules: dict[str, torch.nn.Module], name: str) -> bool:
    """Whether module `name` is a mixture of experts' router: it sits beside a stacked experts module."""
    parent = name.rpartition(".")[0]
    return any(is_stacked_experts(module) for other, module in modules.items()
               if other.rpartition(".")[0] == parent and other != name)


def projections(experts: torch.nn.Module) -> tuple[str, str]:
    """The names of an experts module's stacked input projection (gate and up, or up alone) and output one."""
    return INPUT_PROJECTIONS[0] if experts.has_gate else INPUT_PROJECTIONS[1], OUTPUT_PROJECTION


def split_stacked_experts(model: torch.nn.Module) -> list[str]:
    """Turns every stacked experts module of `model` into per-expert linear layers, in place; returns their
    names ([] for a dense model)."""
    names = [name for name, module in model.named_modules() if is_stacked_experts(module)]
    for name in names:
        _split(model.get_submodule(name))
    return names


def _split(experts: torch.nn.Module) -> None:
    for projection in projections(experts):
        weight = getattr(experts, projection)
        bias = getattr(experts, f"{projection}_bias", None) if experts.has_bias else None
        layers = torch.nn.ModuleList(expert_linear(weight[index], None if bias is None else bias[index],
                                             experts.is_transposed)
                                     for index in range(weight.shape[0]))
        delattr(experts, projection)
        if bias is not None:
            delattr(experts, f"{projection}_bias")
        setattr(experts, projection, layers)
    # The instance's forward, not the class's: the module keeps its class, so its own gate (`_apply_gate`: GPT-OSS
    # clamps and interleaves), activation and post-expert norm stay what transformers defines.
    experts.forward = types.MethodType(_dense_forward, experts)


def expert_linear(weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> torch.nn.Linear:
    """One expert's projection: transposed layouts store [in, out], nn.Linear wants [out, in]."""
    weight = (weight.t() if transposed else weight).detach().contiguous().clone()
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                            dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _dense_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                   top_k_weights: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by the token's routing weight for it."""
    inputs, outputs = (getattr(self, name) for name in projections(self))
    routing = routing_weights(top_k_index, top_k_weights, len(outputs))
    result = torch.zeros_like(hidden_states)
    for expert, (first, last) in enumerate(zip(inputs, outputs)):
        projected = first(hidden_states)
        projected = self._apply_gate(projected) if self.has_gate else self.act_fn(projected)
        projected = last(projected)
        if self.has_post_expert_norm:
            projected = self.post_expert_norm(projected)
        result = result + (projected * routing[..., expert, None]).to(result.dtype)
    return result


def routing_weights(top_k_index: torch.Tensor, top_k_weights: torch.Tensor, experts: int) -> torch.Tensor:
    """[tokens, experts] routing weights: each token's top-k weights at its experts, zero elsewhere. Routers that
    already return a weight for every expert pass through. An index equal to `experts` (the sentinel of expert
    parallelism, which the sparse forward skips) lands in an extra column that is dropped."""
    if top_k_weights.shape[-1] == experts and top_k_weights.shape != top_k_index.shape:
        return top_k_weights
    dense = torch.zeros(*top_k_index.shape[:-1], experts + 1, dtype=top_k_weights.dtype,
                        device=top_k_weights.device)
    return dense.scatter_add(-1, top_k_index, top_k_weights)[..., :experts]
