"""Linear and 2-D convolution calls that no plain `nn.Linear` / `nn.Conv2d` module made, marked as such so that the
x86 quantizer quantizes them.

torchao's x86 quantizer finds its layers by the module each `aten.linear` / `aten.conv2d` call came from (source
partitions: the innermost module's type, which a loaded `.pt2` records as a string and which must then be exactly
`torch.nn.modules.linear.Linear` / `...conv.Conv2d`). Any other call was left float, silently:

- PyTorch's own `nn.MultiheadAttention` (in every `nn.TransformerEncoderLayer`) computes its input and output
  projections with `F.linear` on its own parameters: int8 PTQ of a 2-layer `nn.TransformerEncoder` classifier
  quantized 5 of its 9 linear layers;
- subclasses of `nn.Linear` / `nn.Conv2d` in a loaded program (`NonDynamicallyQuantizableLinear`, a user's
  `class MyLinear(nn.Linear)`, timm's same-padding convolutions), and modules with their own weight that call
  `F.linear` (I-BERT's `QuantLinear`: 0 of 12 layers).

A call whose weight is a stored float parameter is a layer whatever module made it. Its innermost module type is
set to the layer's; several such calls of one module (cross-attention's separate query and key/value
projections) each get a partition of their own, as `separate_repeated_module_calls` does for repeated modules.
A weight computed in the graph, or a buffer (a fixed filterbank), is no layer and stays as it is.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import fx

from compression.ptq.graph_rewrites import stored_parameter

aten = torch.ops.aten
LAYER_TYPES = {aten.linear.default: torch.nn.Linear, aten.conv2d.default: torch.nn.Conv2d}


def mark_functional_layers(graph: fx.GraphModule) -> list[str]:
    """Mark, in place, the layer calls the quantizer would not see (above); returns their modules' paths."""
    calls: dict[str, list[fx.Node]] = defaultdict(list)
    for node in graph.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op != "call_function" or node.target not in LAYER_TYPES or not stack:
            continue
        path, module_type = next(reversed(stack.values()))
        weight = stored_parameter(graph, node.args[1] if len(node.args) > 1 else None)
        if not _seen_as(module_type, LAYER_TYPES[node.target]) and weight is not None and weight.is_floating_point():
            calls[path].append(node)
    for path, nodes in calls.items():
        for node in nodes:
            layer = LAYER_TYPES[node.target]
            stack = dict(node.meta["nn_module_stack"])  # node metadata may share one dict between nodes
            key = next(reversed(stack))
            stack[key] = (path if len(nodes) == 1 else f"{path}@{node.name}", f"{layer.__module__}.{layer.__name__}")
            node.meta["nn_module_stack"] = stack
    return sorted(calls)


def _seen_as(module_type, layer: type) -> bool:
    """Whether the quantizer's source matcher already takes a call from a module of `module_type` for `layer`."""
    if isinstance(module_type, type):
        return issubclass(module_type, layer)
    return module_type == f"{layer.__module__}.{layer.__name__}"

