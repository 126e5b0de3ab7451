"""JetMoE's experts as one `nn.Linear` per expert, so that the methods working on linear layers reach them.

`JetMoeParallelExperts` (its MLP's and its mixture of attention heads' input and output projections) holds every
expert in one [experts, out, in] `weight` and is called on the routed rows grouped by expert, with each group's
size: `F.linear` of each group with its expert's slice. No method quantizes or prunes a slice of a 3-D tensor, so
int8 PTQ left 84 % of a JetMoE classifier's weights float (1.13x smaller). Split, each expert is a linear layer
the program calls on its group, the same function with the same data-dependent group sizes the upload exports
with. (transformers' `use_experts_implementation` experts are split by `compression.moe_experts`.)
"""

from __future__ import annotations

import types

import torch

from compression.moe_experts import expert_linear


def is_parallel_experts(module: torch.nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (type(module).__name__.endswith("ParallelExperts") and isinstance(weight, torch.nn.Parameter)
            and weight.dim() == 3)


def split_parallel_experts(model: torch.nn.Module) -> list[str]:
    """Turns every parallel-experts module of `model` into per-expert linear layers (`<module>.experts.<i>`), in
    place; returns their names."""
    names = [name for name, module in model.named_modules() if is_parallel_experts(module)]
    for name in names:
        module = model.get_submodule(name)
        weight = module.weight
        experts = torch.nn.ModuleList(expert_linear(weight[index], None, transposed=False)
                                      for index in range(weight.shape[0]))
        delattr(module, "weight")
        module.experts = experts
        module.forward = types.MethodType(_grouped_forward, module)
    return names


def _grouped_forward(self, inputs: torch.Tensor, expert_size) -> torch.Tensor:
    """The rows of each expert's group through that expert, in order, as `JetMoeParallelExperts.forward`."""
    groups = inputs.split(expert_size, dim=0)
    return torch.cat([expert(group) for expert, group in zip(self.experts, groups)], dim=0)
