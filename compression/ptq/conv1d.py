"""1-D convolutions rewritten as 2-D ones with a height of 1, so the x86 int8 recipe quantizes them.

torchao's x86 inductor quantizer annotates `conv2d` and `linear` only: a model made of `nn.Conv1d` layers (audio
and sequence CNNs, e.g. the pretrained PESTO pitch model) came out of the default `ptq` job with no layer quantized,
as large as its upload and no faster (issue 10). conv1d(x, w) equals conv2d(x[:, :, None], w[:, :, None])[:, :, 0]
for any stride, padding, dilation and groups, and the 2-D form is what inductor's oneDNN int8 kernels run.
"""

from __future__ import annotations

import torch
from torch import fx

_CONV1D = torch.ops.aten.conv1d.default
_ARGUMENTS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def conv1d_as_conv2d(graph: fx.GraphModule) -> int:
    """Rewrite, in place, every `aten.conv1d` whose weight is a stored tensor; returns how many were rewritten.
    The graph must be re-exported afterwards (the new nodes carry no traced shapes)."""
    return rewrite_calls(graph, _CONV1D, _as_conv2d)


def _as_conv2d(graph: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    inputs, weight, bias, stride, padding, dilation, groups = conv_arguments(node)
    stored = stored_weight(graph, weight)
    if stored is None:
        return None  # a computed weight: leave it (it stays in float)
    with graph.graph.inserting_before(node):
        weight_2d = new_weight(graph, weight, "as_2d", stored.detach().unsqueeze(2))
        inputs_2d = graph.graph.call_function(torch.ops.aten.unsqueeze.default, (inputs, 2))
        conv = graph.graph.call_function(torch.ops.aten.conv2d.default, (
            inputs_2d, weight_2d, bias, [1, *_one(stride)], [0, *_one(padding)], [1, *_one(dilation)], groups))
        output = graph.graph.call_function(torch.ops.aten.squeeze.dim, (conv, 2))
    if "nn_module_stack" in node.meta:
        # The quantizer finds convs by the innermost module they came from (`get_source_partitions`): the conv
        # is marked as a Conv2d's, the reshapes around it stay the Conv1d's (outside its partition).
        stack = dict(node.meta["nn_module_stack"])
        inputs_2d.meta["nn_module_stack"] = output.meta["nn_module_stack"] = dict(stack)
        mark_module_type(conv, node, "torch.nn.modules.conv.Conv2d")
    return output


def mark_module_type(new: fx.Node, replaced: fx.Node, module_type: str) -> None:
    """Give `new` the module stack of the node it replaces, its innermost module's type set to `module_type`: the
    quantizer finds convs and linears by the type of the innermost module they came from."""
    if "nn_module_stack" in replaced.meta:
        stack = dict(replaced.meta["nn_module_stack"])
        key, (path, _) = next(reversed(stack.items()))
        new.meta["nn_module_stack"] = stack | {key: (path, module_type)}


def as_pair(values) -> list[int]:
    """A 2-D conv argument (stride, padding, dilation) as [height, width]; one value stands for both."""
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    return values * 2 if len(values) == 1 else values


def rewrite_calls(graph: fx.GraphModule, target, rewrite) -> int:
    """Replace, in place, each call of `target` by the node `rewrite(graph, node)` builds (None leaves the call as
    it is); returns how many were replaced."""
    rewritten = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target != target:
            continue
        output = rewrite(graph, node)
        if output is None:
            continue
        node.replace_all_uses_with(output)
        graph.graph.erase_node(node)
        rewritten += 1
    if rewritten:
        graph.graph.lint()
        graph.recompile()
    return rewritten


def new_weight(graph: fx.GraphModule, weight: fx.Node, suffix: str, value: torch.Tensor) -> fx.Node:
    """Store `value` beside the attribute `weight` reads (named after it + suffix) and read it (a get_attr node at
    the graph's insertion point)."""
    owner_path, _, attribute = weight.target.rpartition(".")
    owner = graph.get_submodule(owner_path) if owner_path else graph
    owner.register_parameter(f"{attribute}_{suffix}", torch.nn.Parameter(value, requires_grad=False))
    return graph.graph.get_attr(f"{owner_path}.{attribute}_{suffix}" if owner_path else f"{attribute}_{suffix}")


def conv_arguments(node: fx.Node, target=_CONV1D) -> list:
    """(input, weight, bias, stride, padding, dilation, groups) of an aten conv1d/conv2d call, defaults filled in."""
    spatial = 1 if target == _CONV1D else 2
    args = list(node.args) + [None, [1] * spatial, [0] * spatial, [1] * spatial, 1][len(node.args) - 2:]
    for name, value in node.kwargs.items():
        args[_ARGUMENTS.index(name)] = value
    return args


def stored_weight(graph: fx.GraphModule, weight) -> torch.Tensor | None:
    """The tensor a conv's weight argument reads when it is a stored attribute (None when it is computed)."""
    if not (isinstance(weight, fx.Node) and weight.op == "get_attr"):
        return None
    owner_path, _, attribute = weight.target.rpartition(".")
    return getattr(graph.get_submodule(owner_path) if owner_path else graph, attribute)


def stored_parameter(graph: fx.GraphModule, node) -> torch.Tensor | None:
    """The parameter `node` reads when it is a get_attr of one (None for a computed value, a buffer or a
    constant: a fixed matrix such as a filterbank is no layer's weight)."""
    if not (isinstance(node, fx.Node) and node.op == "get_attr"):
        return None
    try:
        return graph.get_parameter(node.target)
    except AttributeError:
        return None


def holds_float(node: fx.Node) -> bool:
    """Whether the traced value of `node` is a float tensor (or is not known: no traced shape)."""
    value = node.meta.get("val")
    return not isinstance(value, torch.Tensor) or value.dtype.is_floating_point


def _one(values) -> list[int]:
    return list(values) if isinstance(values, (list, tuple)) else [values]
