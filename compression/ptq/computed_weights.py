"""Layer weights that the graph computes from one parameter, computed once before quantization.

Some layers do not read their weight as stored: BiT's convolutions standardize it first (a batch norm over the
weight's own statistics). Both PTQ paths quantize layers whose weight is a stored tensor, so those layers stayed
float (BiT: 98 % of its weights, "weights stay float" warned). With the weights frozen, the computation gives one
tensor: it is stored in the parameter it was computed from, under the same name, and the layer reads that.
Computed only where the parameter feeds nothing else, so nothing is stored twice, and only from one parameter: a
weight-normed convolution (wav2vec2's positional convolution, direction and norm) stored in its direction would
give that parameter another meaning, and the model's Hugging Face folder (whose architecture recomputes the weight
from both) would no longer be writable; it stays float, as before.
"""

from __future__ import annotations

import torch
from torch import fx
from torch.fx.node import map_arg

from compression.graph_ops import returns_view
from compression.quant.graph import CONVOLUTION_CALLS, LINEAR_OPS, get_tensor, set_tensor

LAYER_OPS = CONVOLUTION_CALLS | LINEAR_OPS
# Ops whose value is not a function of their inputs alone
_RANDOM = ("dropout", "rand", "bernoulli", "normal", "multinomial")
# Ops that only move or copy values; most views are found by their schema (`_moves_values`)
_COPIES = {"clone", "contiguous", "_to_copy", "to", "reshape", "flatten", "unflatten", "detach", "lift_fresh_copy"}


def _cone(weight: fx.Node) -> list[fx.Node] | None:
    """The nodes `weight` is computed from, in graph order, when they read parameters and constants only (no model
    input, nothing random); None otherwise."""
    seen: dict[fx.Node, None] = {}
    stack = [weight]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        if node.op == "placeholder" or node.op == "call_module" or (
                node.op == "call_function" and any(word in str(node.target) for word in _RANDOM)):
            return None
        seen[node] = None
        stack.extend(node.all_input_nodes)
    order = {node: index for index, node in enumerate(weight.graph.nodes)}
    return sorted(seen, key=order.__getitem__)


def _evaluate(graph_module: fx.GraphModule, cone: list[fx.Node]) -> torch.Tensor:
    values: dict[fx.Node, object] = {}
    for node in cone:
        if node.op == "get_attr":
            values[node] = get_tensor(graph_module, node.target)
        else:
            args = map_arg(node.args, values.__getitem__)
            kwargs = map_arg(node.kwargs, values.__getitem__)
            values[node] = node.target(*args, **kwargs)
    return values[cone[-1]]


def store_computed_weights(graph_module: fx.GraphModule) -> list[str]:
    """Replace, in place, each conv/linear weight computed from one parameter of its shape (and constants) by its
    value, stored in that parameter; returns those parameters' names."""
    stored = []
    with torch.no_grad():
        for node in list(graph_module.graph.nodes):
            if node.op != "call_function" or node.target not in LAYER_OPS or len(node.args) < 2:
                continue
            weight = node.args[1]
            if not isinstance(weight, fx.Node) or weight.op != "call_function":
                continue
            cone = _cone(weight)
            if cone is None or any(user not in cone and user is not node for member in cone
                                   for user in member.users) or _read_elsewhere(graph_module, cone):
                continue  # a parameter or a step that something else reads too: it would be stored twice
            if all(_moves_values(member) for member in cone if member.op == "call_function"):
                # the parameter reshaped (Mamba's conv weight squeezed and unsqueezed back): no value is
                # computed, and such a layer, called from its parent's forward, has no module of its own that
                # a Hugging Face folder could write its quantized weight to, so it stays as it was
                continue
            value = _evaluate(graph_module, cone)
            sources = [member for member in cone if member.op == "get_attr"]
            if not isinstance(value, torch.Tensor) or len(sources) != 1 \
                    or get_tensor(graph_module, sources[0].target).shape != value.shape:
                continue
            set_tensor(graph_module, sources[0].target, value.detach().clone())
            node.replace_input_with(weight, sources[0])
            for member in reversed(cone):  # the computation, now read by nothing
                if not member.users and member is not sources[0]:
                    graph_module.graph.erase_node(member)
            stored.append(sources[0].target)
    if stored:
        graph_module.recompile()
    return stored


def _moves_values(node: fx.Node) -> bool:
    """A view or copy: the op's values are its input's (squeeze, view, permute, transpose, clone, ...)."""
    target = node.target
    return isinstance(target, torch._ops.OpOverload) and (
        returns_view(target) or target._schema.name.split("::")[-1] in _COPIES)


def _read_elsewhere(graph_module: fx.GraphModule, cone: list[fx.Node]) -> bool:
    """Another get_attr node of the graph reads one of the cone's parameters."""
    targets = {member.target for member in cone if member.op == "get_attr"}
    return any(node.op == "get_attr" and node.target in targets and node not in cone
               for node in graph_module.graph.nodes)
