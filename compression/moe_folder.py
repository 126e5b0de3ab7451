"""A mixture of experts' stage written back as its Hugging Face folder: the program's per-expert linear layers
(`compression.moe_experts`) stacked again into the 3-D tensors the folder's model holds.

The stage's graph names expert 3's gate-and-up layer `...experts.gate_up_proj.3`; the folder holds
`...experts.gate_up_proj` [experts, out, in] (GPT-OSS: [experts, in, out], with `gate_up_proj_bias`). So the folder
writer reads the graph against the source's tensors split the same way (`split_source`) and stacks the float
weights back (`restack`). Experts pruned to different widths cannot be (one stacked tensor has one width).

Quantized experts are written as the checkpoints on the Hub hold them (`checkpoint_experts`): one linear layer per
expert under the names transformers saves (`experts.3.gate_proj` and `experts.3.up_proj`; Mixtral's `experts.3.w1`,
found by transformers' own reverse conversion), `pack-quantized` in compressed-tensors. transformers 5 loads them
by decompressing each expert before it stacks them (`CompressedTensorsDequantize`), so the loaded experts compute
in float with the quantized values, and vLLM serves the same layout quantized. A static input quantizer of an
expert layer (W8A8) has no place there: the experts' inputs run in float in the folder. Experts transformers saves
stacked (GPT-OSS's [experts, in, out] with biases, GraniteMoE's) have no per-expert layout: refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from compression.llm.quantize import QuantizedWeight
from compression.moe_experts import is_stacked_experts, projections
from compression.parallel_experts import is_parallel_experts


class StackedExpertsNotWritable(ValueError):
    """The stage changed the experts in a way a folder's stacked tensors cannot hold."""


@dataclass(frozen=True)
class StackedProjection:
    """One stacked projection of an experts module: `name` is its tensor's ([experts, ...]), `bias` its bias's."""

    name: str
    experts: int
    transposed: bool
    bias: str | None
    # the program's per-expert layers are `<layers>.<expert>`; by default `<name>.<expert>`
    layers: str | None = None

    def layer(self, expert: int) -> str:
        return f"{self.layers or self.name}.{expert}"


def stacked_projections(model: torch.nn.Module) -> list[StackedProjection]:
    """The stacked projections of every experts module of a (not split) transformers model."""
    found = []
    for module_name, module in model.named_modules():
        if is_parallel_experts(module):  # JetMoE's: `<module>.weight`, split into `<module>.experts.<i>`
            found.append(StackedProjection(f"{module_name}.weight", module.weight.shape[0], False, None,
                                           f"{module_name}.experts"))
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


@dataclass
class CheckpointExperts:
    """Quantized experts in the checkpoint's per-expert layout: `weights` by checkpoint module name
    (`...experts.3.gate_proj`), the `stacked_shapes` of the folder model's tensors they stand for (pruning may have
    changed them), and the program's expert `layers` they were read from."""

    weights: dict[str, QuantizedWeight] = field(default_factory=dict)
    stacked_shapes: dict[str, torch.Size] = field(default_factory=dict)
    layers: list[str] = field(default_factory=list)


def checkpoint_experts(weights: dict[str, QuantizedWeight], projections: list[StackedProjection],
                       model: torch.nn.Module) -> CheckpointExperts:
    """The quantized expert layers of `weights` (the program's names: `...experts.gate_up_proj.3`) as the
    checkpoint layout's per-expert layers of `model` (the transformers model, whose conversion mapping says how
    its checkpoints name them); a projection must have all of its experts quantized alike, to one shape."""
    from transformers.core_model_loading import revert_weight_conversion

    found = CheckpointExperts()
    for projection in projections:
        layers = [projection.layer(expert) for expert in range(projection.experts)]
        quantized = [weights[layer] for layer in layers if layer in weights]
        if not quantized:
            continue
        if len(quantized) != len(layers):
            raise StackedExpertsNotWritable(f"the stage quantized {len(quantized)} of the {len(layers)} experts of "
                                            f"'{projection.name}'; a folder holds the experts of one projection in "
                                            "one format")
        if projection.transposed or projection.bias:
            raise StackedExpertsNotWritable(f"the experts of '{projection.name}' are stored [experts, in, out] with "
                                            "biases, which transformers saves stacked: checkpoints of this "
                                            "architecture have no per-expert linear layers to hold them quantized")
        if len({q.format for q in quantized}) > 1 or len({q.codes.shape for q in quantized}) > 1:
            raise StackedExpertsNotWritable(f"the experts of '{projection.name}' were quantized to different formats "
                                            "or pruned to different widths; a folder holds them in one")
        stacked = {key: torch.stack([getattr(q, key) for q in quantized]) for key in ("codes", "scale", "zero_point")
                   if getattr(quantized[0], key) is not None}
        # The reverse conversion only slices and renames: codes, scales and zero points [experts, out, ...] come
        # apart along the same rows into the same per-expert names.
        parts = {key: revert_weight_conversion(model, {projection.name: tensor}) for key, tensor in stacked.items()}
        names = list(parts["codes"])
        if not all(name.endswith(".weight") and parts["codes"][name].dim() == 2
                   and parts["scale"][name].shape[0] == parts["codes"][name].shape[0] for name in names):
            raise StackedExpertsNotWritable(f"transformers saves the experts of '{projection.name}' stacked "
                                            f"({names[0]}): checkpoints of this architecture have no per-expert "
                                            "linear layers to hold them quantized")
        for name in names:
            zero = parts["zero_point"][name] if "zero_point" in parts else None
            found.weights[name.removesuffix(".weight")] = QuantizedWeight(
                parts["codes"][name].contiguous(), parts["scale"][name].contiguous(),
                None if zero is None else zero.contiguous(), quantized[0].format)
        found.stacked_shapes[projection.name] = stacked["codes"].shape
        found.layers.extend(layers)
    return found


def checkpoint_expert_weights(loaded: torch.nn.Module, source: torch.nn.Module, names: set[str]
                              ) -> dict[str, torch.Tensor]:
    """The float weights of the checkpoint's per-expert layers `names` as `loaded` (a folder transformers loaded)
    holds them stacked: module name -> [out, in]. Cut apart with the conversion of `source`, the same architecture
    loaded without a quantizer (a quantized model's conversions also unpack, which has no reverse)."""
    from transformers.core_model_loading import revert_weight_conversion

    modules = {name for name, module in loaded.named_modules() if is_stacked_experts(module)}
    stacked = {name: tensor for name, tensor in loaded.state_dict().items() if name.rpartition(".")[0] in modules}
    per_expert = revert_weight_conversion(source, stacked)
    return {name.removesuffix(".weight"): tensor for name, tensor in per_expert.items()
            if name.removesuffix(".weight") in names}
