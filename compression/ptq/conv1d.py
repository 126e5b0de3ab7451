"""1-D convolutions rewritten as 2-D ones with a height of 1, so the x86 int8 recipe quantizes them.

torchao's x86 inductor quantizer annotates `conv2d` and `linear` only: a model made of `nn.Conv1d` layers (audio
and sequence CNNs, e.g. the pretrained PESTO pitch model) came out of the default `ptq` job with no layer quantized,
as large as its upload and no faster (issue 10). conv1d(x, w) equals conv2d(x[:, :, None], w[:, :, None])[:, :, 0]
for any stride, padding, dilation and groups, and the 2-D form is what inductor's oneDNN int8 kernels run.
"""

from __future__ import annotations

import torch
from torch import fx

from compression.ptq.graph_rewrites import (
    CONV1D,
    as_list,
    conv_arguments,
    mark_module_type,
    new_weight,
    rewrite_calls,
    stored_tensor,
)


def conv1d_as_conv2d(graph: fx.GraphModule) -> int:
    """Rewrite, in place, every `aten.conv1d` whose weight is a stored tensor; returns how many were rewritten.
    The graph must be re-exported afterwards (the new nodes carry no traced shapes)."""
    return rewrite_calls(graph, CONV1D, _as_conv2d)


def _as_conv2d(graph: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    inputs, weight, bias, stride, padding, dilation, groups = conv_arguments(node)
    stored = stored_tensor(graph, weight)
    if stored is None:
        return None  # a computed weight: leave it (it stays in float)
    with graph.graph.inserting_before(node):
        weight_2d = new_weight(graph, weight, "as_2d", stored.detach().unsqueeze(2))
        inputs_2d = graph.graph.call_function(torch.ops.aten.unsqueeze.default, (inputs, 2))
        conv = graph.graph.call_function(torch.ops.aten.conv2d.default, (
            inputs_2d, weight_2d, bias, [1, *as_list(stride)], [0, *as_list(padding)], [1, *as_list(dilation)],
            groups))
        output = graph.graph.call_function(torch.ops.aten.squeeze.dim, (conv, 2))
    if "nn_module_stack" in node.meta:
        # The quantizer finds convs by the innermost module they came from (`get_source_partitions`): the conv
        # is marked as a Conv2d's, the reshapes around it as the enclosing module's. Left the Conv1d's, they were
        # a partition of two outputs (the unsqueeze feeds the conv outside it), which the quantizer refuses when
        # a ReLU follows ("Input partition has more than one output node": LASR's subsampling convolutions).
        enclosing = dict(list(node.meta["nn_module_stack"].items())[:-1])
        inputs_2d.meta["nn_module_stack"], output.meta["nn_module_stack"] = dict(enclosing), dict(enclosing)
        mark_module_type(conv, node, "torch.nn.modules.conv.Conv2d")
    return output
