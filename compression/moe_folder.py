"""A mixture of experts' stage written back as its Hugging Face folder: the program's per-expert linear layers
(`compression.moe_experts`) stacked again into the 3-D tensors the folder's model holds.

The stage's graph names expert 3's gate-and-up layer `...experts.gate_up_proj.3`; the folder holds
`...experts.gate_up_proj` [experts, out, in] (GPT-OSS: [experts, in, out], with `gate_up_proj_bias`). So the folder
writer reads the graph against the source's tensors split the same way (`split_source`) and stacks the float
weights back (`restack`). Weights a stage quantized cannot be stacked back: compressed-tensors quantizes
`nn.Linear` modules, and transformers loads no quantized stacked experts; nor can experts pruned to different
widths (one stacked tensor has one width). Both raise `NotExpressible` with the reason, and the stage's `.pt2`
is its model. Float stages (pruning, a 'layers' student, ...) get their folder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compression.moe_experts import is_stacked_experts, projections


class StackedExpertsNotWritable(ValueError):
    """The stage changed the experts in a way a folder's stacked tensors cannot hold."""


@dataclass(frozen=True)
class StackedProjection:
    """One stacked projection of an experts module: `name` is its tensor's ([experts, ...]), `bias` its bias's."""

    name: str
    experts: int
    transposed: bool
    bias: str | None

    def layer(self, expert: int) -> str:
        return f"{self.name}.{expert}"


def stacked_projections(model: torch.nn.Module) -> list[StackedProjection]:
    """The stacked projections of every experts module of a (not split) transformers model."""
    found = []
    for module_name, module in model.named_modules():
        if not is_stacked_experts(module):
            continue
        for projection in projections(module):
            weight = getattr(module, projection)
            bias = f"{module_name}.{projection}_bias" if module.has_bias else None
            found.append(StackedProjection(f"{module_name}.{projection}", weight.shape[0], module.is_transposed, bias))
    return found


def split_source(source: dict[str, torch.Tensor], projections: list[StackedProjection]) -> dict[str, torch.Tensor]:
    """The source's tensors as the program names them: each stacked projection as one linear layer per expert."""
    split = dict(source)
    for projection in projections:
        weight = split.pop(projection.name)
        bias = split.pop(projection.bias) if projection.bias else None
        for expert in range(projection.experts):
            expert_weight = weight[expert].t() if projection.transposed else weight[expert]
            split[f"{projection.layer(expert)}.weight"] = expert_weight
            if bias is not None:
                split[f"{projection.layer(expert)}.bias"] = bias[expert]
    return split


def restack(floats: dict[str, torch.Tensor], quantized: set[str], projections: list[StackedProjection]) -> None:
    """Puts each projection's per-expert float weights of `floats` (the folder's tensors by name) back into its
    stacked tensor, in place. `quantized`: the modules the stage quantized. Per-expert weights `floats` lacks are
    left out, and the source's stacked tensor is copied later; one projection with some experts changed and some
    not cannot be, and is refused."""
    for projection in projections:
        layers = [projection.layer(expert) for expert in range(projection.experts)]
        if any(layer in quantized for layer in layers):
            raise StackedExpertsNotWritable(
                f"the stage quantized the experts of '{projection.name}': the folder's model holds them as one "
                "stacked tensor, which compressed-tensors cannot hold quantized (it quantizes nn.Linear "
                "modules); the stage's other artifacts hold the compressed model")
        for suffix, target in (("weight", projection.name), ("bias", projection.bias)):
            names = [f"{layer}.{suffix}" for layer in layers]
            present = [name for name in names if name in floats]
            if not present or target is None:
                continue
            if len(present) != len(names):
                raise StackedExpertsNotWritable(f"the graph holds {len(present)} of the {len(names)} experts of "
                                                f"'{projection.name}'")
            tensors = [floats.pop(name) for name in names]
            if len({tensor.shape for tensor in tensors}) > 1:
                raise StackedExpertsNotWritable(
                    f"the experts of '{projection.name}' were pruned to different widths "
                    f"({sorted({tuple(tensor.shape) for tensor in tensors})[:3]}); the folder's model holds them as "
                    "one stacked tensor of one width")
            if suffix == "weight" and projection.transposed:
                tensors = [tensor.t() for tensor in tensors]
            floats[target] = torch.stack(tensors).contiguous()
