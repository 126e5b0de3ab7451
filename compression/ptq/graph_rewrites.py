"""Helpers of the graph rewrites that run before int8 quantization (`compression.ptq.conv1d`, `conv_orientation`,
`explicit_padding`, `addmm_linear`, `functional_layers`, `batch_norm_affine`, `string_padding`): replacing the calls
of one op, reading and storing a layer's weight, giving a new node the module type the quantizer looks for."""

from __future__ import annotations

import torch
from torch import fx

from compression.quant.graph import get_tensor

CONV1D = torch.ops.aten.conv1d.default
_ARGUMENTS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def mark_module_type(new: fx.Node, replaced: fx.Node, module_type: str) -> None:
    """Give `new` the module stack of the node it replaces, its innermost module's type set to `module_type`: the
    quantizer finds convs and linears by the type of the innermost module they came from."""
    if "nn_module_stack" in replaced.meta:
        stack = dict(replaced.meta["nn_module_stack"])
        key, (path, _) = next(reversed(stack.items()))
        new.meta["nn_module_stack"] = stack | {key: (path, module_type)}


def as_list(values) -> list[int]:
    """A conv argument (stride, padding, dilation) as a list: one value, or one per spatial dimension."""
    return list(values) if isinstance(values, (list, tuple)) else [values]


def as_pair(values) -> list[int]:
    """A 2-D conv argument (stride, padding, dilation) as [height, width]; one value stands for both."""
    values = as_list(values)
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


def conv_arguments(node: fx.Node, target=CONV1D) -> list:
    """(input, weight, bias, stride, padding, dilation, groups) of an aten conv1d/conv2d call, defaults filled in."""
    spatial = 1 if target == CONV1D else 2
    args = list(node.args) + [None, [1] * spatial, [0] * spatial, [1] * spatial, 1][len(node.args) - 2:]
    for name, value in node.kwargs.items():
        args[_ARGUMENTS.index(name)] = value
    return args


def stored_tensor(graph: fx.GraphModule, node) -> torch.Tensor | None:
    """The tensor an op's argument `node` reads when it is a stored attribute (a conv's weight, a quantizer's
    codes or scale; None when it is computed)."""
    if not (isinstance(node, fx.Node) and node.op == "get_attr"):
        return None
    return get_tensor(graph, node.target)


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


def register_codes(gm: fx.GraphModule, attr: str, codes: torch.Tensor, scale: torch.Tensor) -> tuple[str, str]:
    """Store a weight's integer `codes` and `scale` as buffers beside it (`<leaf>_codes`, `<leaf>_scale`); returns
    their attribute names. The caller rewrites the graph to read them and deletes the float weight."""
    owner, _, leaf = attr.rpartition(".")
    holder = gm.get_submodule(owner) if owner else gm
    holder.register_buffer(f"{leaf}_codes", codes)
    holder.register_buffer(f"{leaf}_scale", scale)
    prefix = f"{owner}." if owner else ""
    return f"{prefix}{leaf}_codes", f"{prefix}{leaf}_scale"
