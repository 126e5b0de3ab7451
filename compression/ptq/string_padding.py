"""Convolutions whose padding is a string ("same" or "valid": `nn.Conv2d(padding="same")`, as the stride-1
depthwise layers of transformers' EfficientNet and many ports of Keras models have) rewritten with numeric padding
before quantizing. torch.export keeps them as `aten.conv2d.padding` / `aten.conv1d.padding`, which torchao's x86
quantizer refuses outright ("conv2d is not an aten conv2d operator": the whole int8 stage failed) and which the
1-D conv rewrite does not read.

The rewrite computes what PyTorch computes for "same": along each axis `dilation x (kernel - 1)` padding, half
before and the rest after; an odd total puts its extra element after, done by a `constant_pad_nd` of zeros before
the conv (exact: zero is what implicit padding stands for, and is quantized to the zero point exactly). "valid"
is no padding.
"""

from __future__ import annotations

import torch
from torch import fx

from compression.ptq.graph_rewrites import conv_arguments, rewrite_calls

aten = torch.ops.aten
# The string-padded overload of each conv, and the numeric one it becomes.
NUMERIC_OVERLOAD = {aten.conv2d.padding: aten.conv2d.default, aten.conv1d.padding: aten.conv1d.default}


def numeric_conv_padding(graph: fx.GraphModule) -> int:
    """Rewrite, in place, every string-padded conv whose kernel size is known; returns how many were rewritten.
    The graph must be re-exported afterwards (the new nodes carry no traced shapes)."""
    return sum(rewrite_calls(graph, source, lambda graph, node, numeric=numeric: _numeric(node, numeric))
               for source, numeric in NUMERIC_OVERLOAD.items())


def even_conv_padding_in_place(graph: fx.GraphModule) -> int:
    """Rewrite, in place, every string-padded conv whose padding is the same on both sides of each axis (every
    "valid" one, and "same" with odd kernels: EfficientNet's depthwise 3x3 and 5x5) as the numeric conv, keeping
    the traced output of the node it replaces, so that the graph runs and is analysed without a re-export; returns
    how many. Every method's layer search (weight-only, QAT, iPQ, pruning) knows the numeric convs only: a model
    whose convolutions are all string-padded (transformers' EfficientNet) had no layer for them to compress."""
    return sum(rewrite_calls(graph, source, lambda graph, node, numeric=numeric: _numeric(node, numeric, True))
               for source, numeric in NUMERIC_OVERLOAD.items())


def _numeric(node: fx.Node, numeric, even_only: bool = False) -> fx.Node | None:
    inputs, weight, bias, stride, padding, dilation, groups = conv_arguments(node, numeric)
    if not isinstance(padding, str):
        padding = "valid"  # the overload's default, which conv_arguments fills in as the numeric one's
    traced = weight.meta.get("val") if isinstance(weight, fx.Node) else None
    if traced is None or padding not in ("same", "valid"):
        return None  # a kernel of unknown size: left as it is (it stays float)
    kernel = list(traced.shape[2:])
    dilation = list(dilation) * len(kernel) if len(list(dilation)) == 1 else list(dilation)
    totals = [0] * len(kernel) if padding == "valid" else [d * (k - 1) for d, k in zip(dilation, kernel)]
    before, extra = [total // 2 for total in totals], [total % 2 for total in totals]
    if even_only and any(extra):
        return None  # its extra pad element would be a node with no traced shape
    with node.graph.inserting_before(node):
        if any(extra):
            # constant_pad_nd lists (before, after) pairs from the last axis: the extra element goes after.
            pads = [value for odd in reversed(extra) for value in (0, odd)]
            inputs = node.graph.call_function(aten.constant_pad_nd.default, (inputs, pads, 0.0))
        conv = node.graph.call_function(numeric, (inputs, weight, bias, stride, before, dilation, groups))
    if "nn_module_stack" in node.meta:
        # The conv stays its module's (the quantizer finds convs by their module); a pad belongs to the enclosing
        # module, outside the conv's partition.
        stack = dict(node.meta["nn_module_stack"])
        conv.meta["nn_module_stack"] = dict(stack)
        if any(extra):
            inputs.meta["nn_module_stack"] = dict(list(stack.items())[:-1])
    if even_only:  # the same output as the string-padded call's
        conv.meta.update({key: node.meta[key] for key in ("val", "tensor_meta", "stack_trace") if key in node.meta})
    return conv
