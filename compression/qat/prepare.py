"""Turning a model into a QAT model and back: quantizers in, calibration, batch-norm freezing, materialization.

Every model is handled as an exported graph module (plain modules are exported first, as in PTQ), so one code path
serves uploads and notebooks alike:

- weight quantizers are submodules called by new `call_module` nodes between each weight's `get_attr` and its
  conv/linear call, so the optimizer trains the float weight while every forward sees it quantized;
- activation quantizers are submodules called by new `call_module` nodes inserted on the input of every conv/linear
  call. Forward pre-hooks would not work: an exported graph never calls the submodules that hold the weights.

Why graph nodes rather than `torch.nn.utils.parametrize` for the weights: torchao's
`move_exported_model_to_train/eval` (behind compression.modes) rewrite the graph with torch.fx's subgraph rewriter,
which calls `delete_all_unused_submodules()`; a parametrization's `<holder>.parametrizations` module is never named
in the graph, so it is deleted and the parametrized weight stops existing. Quantizers reached by `call_module`
count as used and survive every mode switch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch
from torch import fx, nn

from compression.errors import check_finite_range
from compression.modes import batch_statistics_only
from compression.qat.activation_quantizers import (
    LSQActivationQuantizer,
    PACTActivationQuantizer,
    make_activation_quantizer,
)
from compression.qat.weight_quantizers import make_weight_quantizer
from compression.quant.affine import QParams, dequantize
from compression.quant.graph import as_graph_module, find_layers, get_tensor
from compression.quant.weights import QuantizedWeight, WeightFormat

INPUT_QUANTIZERS = "qat_input_quantizers"
WEIGHT_QUANTIZERS = "qat_weight_quantizers"


@dataclass
class QATLayer:
    name: str  # weight holder, e.g. "layer1.0.conv1"
    weight_attr: str  # e.g. "layer1.0.conv1.weight"
    weight_bits: int
    activation_bits: int | None
    weight_key: str  # key in the graph module's WEIGHT_QUANTIZERS dict (shared by the calls of a shared weight)
    input_key: str | None  # key in the graph module's INPUT_QUANTIZERS dict

    def weight_quantizer(self, gm: fx.GraphModule) -> nn.Module | None:
        """None once the weight has been materialized."""
        quantizers = getattr(gm, WEIGHT_QUANTIZERS, None)
        return quantizers[self.weight_key] if quantizers is not None and self.weight_key in quantizers else None

    def input_quantizer(self, gm: fx.GraphModule) -> nn.Module | None:
        return getattr(gm, INPUT_QUANTIZERS)[self.input_key] if self.input_key else None


def prepare_qat(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], *, weight_bits: int,
                activation_bits: int | None, weight_quantizer: str, activation_quantizer: str,
                per_channel: bool = True, first_last_bits: int | None = None
                ) -> tuple[fx.GraphModule, list[QATLayer]]:
    """A private graph-module copy of `model` with quantizers on every conv/linear whose weight is a parameter.

    `first_last_bits` (if set) overrides both bit widths of the first and last layer in execution order (a weight
    shared by several calls takes the bits of its first call).
    """
    gm = as_graph_module(model, example_inputs)
    if hasattr(gm, INPUT_QUANTIZERS):
        raise ValueError("the model already went through QAT (its layer inputs are fake-quantized); quantizing it "
                         "again would stack two grids: start from the float model instead")
    gm.add_submodule(INPUT_QUANTIZERS, nn.ModuleDict())
    gm.add_submodule(WEIGHT_QUANTIZERS, nn.ModuleDict())
    weight_quantizers = getattr(gm, WEIGHT_QUANTIZERS)
    found = find_layers(gm)
    layers = []
    for index, layer in enumerate(found):
        edge = index in (0, len(found) - 1) and first_last_bits is not None
        w_bits = first_last_bits if edge else weight_bits
        a_bits = (first_last_bits if edge else activation_bits) if activation_bits is not None else None
        weight_key = layer.weight_attr.replace(".", "_")
        if weight_key not in weight_quantizers:
            weight = get_tensor(gm, layer.weight_attr)
            weight_quantizers[weight_key] = make_weight_quantizer(weight_quantizer, weight, w_bits, per_channel)
        with gm.graph.inserting_before(layer.node):
            quantized_weight = gm.graph.call_module(f"{WEIGHT_QUANTIZERS}.{weight_key}", (layer.node.args[1],))
        layer.node.args = (layer.node.args[0], quantized_weight, *layer.node.args[2:])
        input_key = None
        if a_bits is not None:
            input_key = f"{index}_{layer.name.replace('.', '_')}"
            getattr(gm, INPUT_QUANTIZERS)[input_key] = make_activation_quantizer(activation_quantizer, a_bits)
            with gm.graph.inserting_before(layer.node):
                quantized = gm.graph.call_module(f"{INPUT_QUANTIZERS}.{input_key}", (layer.node.args[0],))
            layer.node.args = (quantized, *layer.node.args[1:])
        layers.append(QATLayer(layer.name, layer.weight_attr, weight_quantizers[weight_key].bits, a_bits, weight_key,
                               input_key))
    gm.recompile()
    if not layers:
        raise ValueError("the model has no conv or linear layer to quantize")
    return gm, layers


def calibrate(gm: fx.GraphModule, layers: list[QATLayer], batches: Iterable[tuple[torch.Tensor, ...]]) -> list[str]:
    """Initialise activation ranges from `batches` (float activations, eval mode); returns the layers whose PACT
    quantizer was replaced by LSQ because their input takes negative values (PACT clips at zero)."""
    quantizers = getattr(gm, INPUT_QUANTIZERS)
    if not len(quantizers):
        return []
    for quantizer in quantizers.values():
        quantizer.calibrating = True
    with torch.no_grad():
        for inputs in batches:
            gm(*inputs)
    fallbacks = []
    for layer in layers:
        if layer.input_key is None:
            continue
        quantizer = quantizers[layer.input_key]
        observed = quantizer.finish_calibration()
        check_finite_range(float(observed.min()), float(observed.max()), f"the input of layer {layer.name}")
        if isinstance(quantizer, PACTActivationQuantizer) and observed.min() < 0:
            replacement = LSQActivationQuantizer(quantizer.bits)
            replacement.features = quantizer.features
            with torch.no_grad():
                replacement.initialize(observed)
            quantizers[layer.input_key] = replacement
            fallbacks.append(layer.name)
    return fallbacks


def quantizer_modules(gm: fx.GraphModule, layers: list[QATLayer]) -> nn.ModuleDict:
    """All quantizers of the model in one module, to switch their train/eval mode with the model's."""
    return nn.ModuleDict({"weights": getattr(gm, WEIGHT_QUANTIZERS), "inputs": getattr(gm, INPUT_QUANTIZERS)})


def freeze_batchnorm(model: nn.Module) -> bool:
    """Make batch norm use (and stop updating) its running statistics; dropout is left as it is.

    Returns whether anything changed. Cheap when nothing is left to freeze, so it can run before every step.
    """
    if not isinstance(model, fx.GraphModule):
        changed = False
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
                module.eval()
                changed = True
        return changed
    changed = False
    for node in model.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.batch_norm.default and node.args[5] \
                and not batch_statistics_only(node):
            node.args = (*node.args[:5], False, *node.args[6:])
            changed = True
    if changed:
        model.recompile()
    return changed


@torch.no_grad()
def materialize(gm: fx.GraphModule, layers: list[QATLayer]) -> dict[str, QuantizedWeight]:
    """Bake every fake-quantized weight into its parameter, take the weight quantizers out of the graph, and return
    per weight attribute the integer codes and scales a packed artifact stores."""
    weight_quantizers = getattr(gm, WEIGHT_QUANTIZERS)
    quantized = {}
    for layer in layers:
        if layer.weight_attr in quantized:
            continue  # a shared weight, already done
        quantizer = weight_quantizers[layer.weight_key]
        weight = get_tensor(gm, layer.weight_attr)
        codes, scale = quantizer.codes_and_scale(weight)
        per_channel = scale.dim() == 1
        # The packed format stores scales in bfloat16; baking with that precision keeps the returned model, its
        # .pt2 and the packed artifact identical (the learned step moves by at most 2^-8 of itself).
        stored_scale = scale.float().to(torch.bfloat16).float()
        params = QParams(stored_scale, torch.zeros_like(stored_scale), quantizer.qmin, quantizer.qmax,
                         0 if per_channel else None)
        weight.copy_(dequantize(codes, params).to(weight.dtype))
        fmt = WeightFormat(bits=quantizer.bits, granularity="per_channel" if per_channel else "per_tensor")
        quantized[layer.weight_attr] = QuantizedWeight(fmt, weight.detach().clone(), codes=codes, qparams=params)
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target.startswith(f"{WEIGHT_QUANTIZERS}."):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
    gm.delete_submodule(WEIGHT_QUANTIZERS)
    gm.recompile()
    return quantized


def layer_summary(gm: fx.GraphModule, layers: list[QATLayer]) -> dict[str, dict]:
    """Per layer: the weight quantizer's step sizes (or clip) and the input quantizer's learned range."""
    summary = {}
    for layer in layers:
        entry = {}
        weight_quantizer = layer.weight_quantizer(gm)
        if weight_quantizer is not None:
            entry["weight"] = weight_quantizer.summary(get_tensor(gm, layer.weight_attr))
        input_quantizer = layer.input_quantizer(gm)
        if input_quantizer is not None:
            entry["input"] = input_quantizer.summary()
        summary[layer.name] = entry
    return summary
