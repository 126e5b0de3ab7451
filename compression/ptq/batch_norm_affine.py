"""A BatchNorm that no conv precedes (DenseNet's and pre-activation ResNet's BN-ReLU-conv after a concat, a text
CNN's norm over concatenated branches) written as the per-channel affine it is in eval mode.

torchao's `convert_pt2e` folds conv + BatchNorm pairs left in the graph by matching patterns it first traces with
torch.export: some 96 exports (30-50 s on 2 cores) whenever any batch_norm node is left, whatever the model's
size. `prepare_pt2e` has already folded every BatchNorm that follows a conv; the rest are frozen statistics, and
`x * scale + shift` computes the same values, so convert has nothing left to fold and skips its patterns."""

from __future__ import annotations

import torch
from torch import fx

from compression.ptq.graph_rewrites import rewrite_calls

aten = torch.ops.aten


def batch_norms_as_affine(graph_module: fx.GraphModule) -> int:
    """Rewrite every eval-mode `aten.batch_norm` of `graph_module` in place; returns how many were rewritten."""
    rewritten = rewrite_calls(graph_module, aten.batch_norm.default, _as_affine)
    if rewritten:  # the statistics the rewritten norms read are no longer used
        graph_module.graph.eliminate_dead_code()
        graph_module.recompile()
    return rewritten


def _as_affine(graph_module: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    if node.args[5]:  # training mode: its statistics are not frozen
        return None
    source, weight, bias, mean, variance = node.args[:5]
    eps = node.args[7]
    tensors = [_constant(graph_module, value) for value in (weight, bias, mean, variance)]
    value = node.meta.get("val")  # the input may be an observer, which carries no traced value
    if tensors[2] is None or tensors[3] is None or not isinstance(value, torch.Tensor):
        return None
    channels = tensors[2].numel()
    weight_t = tensors[0] if tensors[0] is not None else torch.ones(channels)
    bias_t = tensors[1] if tensors[1] is not None else torch.zeros(channels)
    scale = weight_t / torch.sqrt(tensors[3] + eps)
    shape = (channels,) + (1,) * (value.dim() - 2)  # channels on axis 1
    names = _register(graph_module, node.name, scale.reshape(shape), (bias_t - tensors[2] * scale).reshape(shape))
    with graph_module.graph.inserting_before(node):
        scaled = graph_module.graph.call_function(aten.mul.Tensor, (source, graph_module.graph.get_attr(names[0])))
        shifted = graph_module.graph.call_function(aten.add.Tensor, (scaled, graph_module.graph.get_attr(names[1])))
    shifted.meta["val"] = value
    return shifted


def _constant(graph_module: fx.GraphModule, node) -> torch.Tensor | None:
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value = graph_module
    for part in str(node.target).split("."):
        value = getattr(value, part)
    return value.detach().float() if isinstance(value, torch.Tensor) else None


def _register(graph_module: fx.GraphModule, name: str, scale: torch.Tensor, shift: torch.Tensor) -> tuple[str, str]:
    names = (f"{name}_affine_scale", f"{name}_affine_shift")
    graph_module.register_buffer(names[0], scale)
    graph_module.register_buffer(names[1], shift)
    return names
