"""`llm_ptq` on a mixture of experts: every expert quantized as its own linear layers, written per expert.

transformers 5 holds a mixture of experts' weights stacked ([experts, out, in] per projection), which no
algorithm here quantizes; so the model is loaded whole (a checkpoint's per-expert tensors are stacked by
transformers' own conversion when it loads, which streaming one block at a time cannot replay) and its experts
split into `nn.Linear` layers (`compression.moe_experts`), which GPTQ, HQQ and RTN then quantize like any
other linear. The split forward runs every expert on every token (weighted by the routing), so each expert's
GPTQ statistics come from all calibration tokens, not only the few the router sends it: what llm-compressor
does with `calibrate_all_experts`, so that rarely chosen experts still get calibrated. The routers stay float
(most are not `nn.Linear`; those that are, and single-output gates, are `kept_float`), as in the Hub's quantized
MoE checkpoints.

The folder holds the experts as those checkpoints do: one pack-quantized linear layer per expert under the names
transformers saves (`compression.moe_folder.checkpoint_experts`), which transformers decompresses and stacks
when it loads the folder, and vLLM serves quantized.
"""

from __future__ import annotations

import re

import torch

from compression.llm import export
from compression.llm.quantize import QuantizedWeight, WeightFormat
from compression.moe_experts import (
    INPUT_PROJECTIONS,
    OUTPUT_PROJECTION,
    is_router,
    is_stacked_experts,
    split_stacked_experts,
)
from compression.moe_folder import StackedExpertsNotWritable, StackedProjection, checkpoint_experts, stacked_projections

# A split expert layer's name: `...experts.gate_up_proj.3` (the projection, then the expert's index).
EXPERT_LAYER = re.compile(rf"^(.*\.({'|'.join((*INPUT_PROJECTIONS, OUTPUT_PROJECTION))}))\.\d+$")


def split_experts(model: torch.nn.Module) -> list[StackedProjection]:
    """Splits `model`'s stacked experts into per-expert linear layers, in place; returns the stacked projections
    they came from (what the folder writer maps back to the checkpoint's names), [] for a dense model."""
    found = stacked_projections(model)
    split_stacked_experts(model)
    return found


def kept_float(model: torch.nn.Module) -> list[str]:
    """The linear layers of a mixture of experts that stay float, found before its experts are split: routers
    that are `nn.Linear` (PhiMoE's, whose own forward picks the top experts) and layers giving one value per token
    (Qwen2-MoE's `shared_expert_gate`, a sigmoid gate on the shared expert), as vLLM builds both unquantized."""
    modules = dict(model.named_modules())
    if not any(is_stacked_experts(module) for module in modules.values()):
        return []  # a dense model: every linear layer is quantized
    return [name for name, module in modules.items() if isinstance(module, torch.nn.Linear)
            and (module.out_features == 1 or is_router(modules, name))]


def check_expert_widths(model: torch.nn.Module, fmt: WeightFormat) -> None:
    """Refuses a group size that does not divide the width of `model`'s (split) experts' layers. Other layers of
    such a width take a smaller group (`WeightFormat.for_columns`), named in the folder's config; an expert's layer
    would be named there as the checkpoint stores it, not as it is quantized."""
    uneven = sorted({module.in_features for name, module in model.named_modules()
                     if isinstance(module, torch.nn.Linear) and parallel_experts(name)
                     and fmt.for_columns(module.in_features) != fmt})
    if uneven:
        fitting = min((fmt.for_columns(width).group_size for width in uneven), key=lambda size: size or 0)
        raise ValueError(f"group_size {fmt.group_size} does not divide the input width(s) {uneven} of this model's "
                         f"experts; use group_size {fitting or 'null'} (null: one scale per output channel)")


def parallel_experts(name: str) -> str | None:
    """The projection an expert layer belongs to (`...experts.down_proj` for `...experts.down_proj.3`), else None:
    the layers of one projection read inputs that none of them computes, so they can be calibrated together."""
    found = EXPERT_LAYER.match(name)
    return found.group(1) if found else None


def in_checkpoint_layout(tensors: dict[str, torch.Tensor], projections: list[StackedProjection],
                         model: torch.nn.Module, fmt: WeightFormat) -> dict[str, torch.Tensor]:
    """A block's written tensors (`compressed_tensors` under the split names, `...experts.gate_up_proj.3`) with
    the experts renamed and cut as the checkpoint stores them (`...experts.3.gate_proj` and `.up_proj`)."""
    present = [projection for projection in projections if f"{projection.layer(0)}.weight_scale" in tensors]
    if not present:
        return tensors
    tensors = dict(tensors)
    weights = {}
    for projection in present:
        for expert in range(projection.experts):
            layer = projection.layer(expert)
            weights[layer] = export.quantized_weight(tensors, layer, fmt)
            for key in [key for key in tensors if key.startswith(f"{layer}.")]:
                del tensors[key]
    converted = checkpoint_experts(weights, present, model)
    for name, quantized in converted.weights.items():
        tensors.update(export.compressed_tensors(name, quantized))
    return tensors


def layout_problem(model: torch.nn.Module) -> str | None:
    """Why a folder could not hold `model`'s experts quantized per expert (GPT-OSS stores them transposed with
    biases, GraniteMoE stacked), found on the model built without weights; None when it can."""
    projections = stacked_projections(model)
    fmt = WeightFormat(bits=4, group_size=None)
    weights = {}
    for projection in projections:
        stacked = model.get_parameter(projection.name)
        rows, columns = (stacked.shape[2], stacked.shape[1]) if projection.transposed else stacked.shape[1:]
        for expert in range(projection.experts):
            weights[projection.layer(expert)] = QuantizedWeight(
                torch.empty(rows, columns, dtype=torch.int8, device="meta"),
                torch.empty(rows, 1, device="meta"), None, fmt)
    try:
        checkpoint_experts(weights, projections, model)
    except StackedExpertsNotWritable as exc:
        return str(exc)
    return None
