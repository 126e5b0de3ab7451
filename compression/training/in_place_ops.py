"""In-place ops of an exported graph rewritten out of place before training.

An exported graph keeps the in-place ops the model's Python ran. Autograd refuses some of them at the first
backward: SEW-D's attention (DeBERTa's `XSoftmax`, traced through its autograd.Function) zeroes masked positions
with `masked_fill_` on the softmax output, which softmax's backward needs ("one of the variables needed for
gradient computation has been modified by an inplace operation"), so every training method failed on it. The
out-of-place op computes the same values into a new tensor, and the later readers of the mutated tensor read that.

Only a tensor that a graph op computed and no view shares is rewritten: a mutated input, parameter or buffer
(running statistics) is state the program means to change, and a view's base would not see the new tensor.
"""

from __future__ import annotations

import torch
from torch import fx

from compression.graph_ops import returns_view


def _functional_variant(target) -> torch._ops.OpOverload | None:
    """aten.masked_fill_.Scalar -> aten.masked_fill.Scalar, for an op that writes its first argument in place."""
    if not isinstance(target, torch._ops.OpOverload):
        return None
    arguments = target._schema.arguments
    if not arguments or arguments[0].alias_info is None or not arguments[0].alias_info.is_write:
        return None
    name = target._schema.name.split("::")[-1]
    if not name.endswith("_") or name.endswith("__"):
        return None
    packet = getattr(getattr(torch.ops, target.namespace), name[:-1], None)
    return getattr(packet, target._overloadname, None) if packet is not None else None


def _is_view(node: fx.Node) -> bool:
    if not isinstance(node.target, torch._ops.OpOverload):
        return node.op == "call_function"  # an unknown function may return a view: assume it does
    return returns_view(node.target)


def rewrite_in_place_ops(model: torch.nn.Module) -> int:
    """Rewrite the in-place ops on computed tensors of every graph in `model` (itself, or one a method wrapped,
    as iPQ's finetuning does) out of place, in place; returns how many."""
    return sum(_rewrite_graph(module) for module in model.modules() if isinstance(module, fx.GraphModule))


def _rewrite_graph(graph_module: fx.GraphModule) -> int:
    position = {node: index for index, node in enumerate(graph_module.graph.nodes)}
    rewritten = 0
    for node in list(graph_module.graph.nodes):
        functional = _functional_variant(node.target) if node.op == "call_function" else None
        mutated = node.args[0] if functional is not None and node.args else None
        if not isinstance(mutated, fx.Node) or mutated.op != "call_function" or _is_view(mutated) \
                or any(_is_view(user) for user in mutated.users if user is not node):
            continue
        with graph_module.graph.inserting_before(node):
            replacement = graph_module.graph.call_function(functional, node.args, node.kwargs)
        replacement.meta = dict(node.meta)
        position[replacement] = position[node]
        node.replace_all_uses_with(replacement)
        for user in list(mutated.users):  # readers after the write read the written values
            if user is not replacement and position[user] > position[node]:
                user.replace_input_with(mutated, replacement)
        graph_module.graph.erase_node(node)
        rewritten += 1
    if rewritten:
        graph_module.recompile()
    return rewritten
