"""Matrix products with a stored weight written as `aten.addmm` rewritten as `aten.linear`, so the x86 int8 recipe
quantizes them.

GPT-2's blocks (and the models derived from it: DistilGPT2, DialoGPT, ...) use transformers' `Conv1D`, which
computes `torch.addmm(bias, x, weight)` with the weight stored [in, out]. torchao's x86 inductor quantizer annotates
`linear` and `conv2d` only, so int8 PTQ quantized none of a GPT-2 block's four projections: a GPT-2 program came
back 1.1x smaller with only its classifier in int8. addmm(b, x, W) equals linear(x, W^T, b) exactly; the transposed
weight is stored beside the original (which the re-export then drops, as nothing reads it).
"""

from __future__ import annotations

import torch
from torch import fx

from compression.ptq.conv1d import mark_module_type, new_weight, rewrite_calls, stored_weight

_ADDMM = torch.ops.aten.addmm.default
LINEAR_WEIGHT_SUFFIX = "as_linear"  # the transposed weight is stored as `<weight>_as_linear` beside the original


def addmm_as_linear(graph: fx.GraphModule) -> int:
    """Rewrite, in place, every `aten.addmm(bias, x, weight)` whose weight and bias are stored tensors ([in, out]
    and [out]) and whose beta and alpha are 1; returns how many were rewritten. The graph must be re-exported
    afterwards (the new nodes carry no traced shapes)."""
    return rewrite_calls(graph, _ADDMM, _as_linear)


def addmm_as_linear_in_place(graph: fx.GraphModule) -> int:
    """`addmm_as_linear`, then the [in, out] originals nothing reads any more are deleted (else every artifact
    would carry them in float beside the new weights); for the paths that keep running the graph as it is (the
    general PTQ path, low-rank students) rather than re-exporting it."""
    from compression.ptq.quantize import drop_unreferenced_tensors  # quantize imports this module

    rewritten = addmm_as_linear(graph)
    if rewritten:
        for node in graph.graph.find_nodes(op="get_attr"):
            if not node.users:
                graph.graph.erase_node(node)
        drop_unreferenced_tensors(graph)
    return rewritten


def _as_linear(graph: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    if len(node.args) != 3 or node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
        return None
    bias, inputs, weight = node.args
    stored, stored_bias = stored_weight(graph, weight), stored_weight(graph, bias)
    if stored is None or stored.dim() != 2 or stored_bias is None or tuple(stored_bias.shape) != stored.shape[1:]:
        return None  # a computed operand, or a bias that broadcasts over rows: not a layer
    with graph.graph.inserting_before(node):
        weight_t = new_weight(graph, weight, LINEAR_WEIGHT_SUFFIX, stored.detach().t().contiguous())
        linear = graph.graph.call_function(torch.ops.aten.linear.default, (inputs, weight_t, bias))
    mark_module_type(linear, node, "torch.nn.modules.linear.Linear")
    return linear
