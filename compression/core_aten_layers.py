"""The layers of a program decomposed to core ATen, written as layer calls again.

A program exported with `torch.export.export(...).run_decompositions()` (the ExecuTorch flow, and close to what
older torch releases' export gave) computes a convolution as `aten.convolution` and a linear layer as `permute` of
its weight and `mm` / `addmm`, or, on 3-D inputs, `expand` and `view` of both operands around a `bmm`. Every method
finds layers by their `aten.conv1d/2d/3d`, `conv_transpose` and `aten.linear` calls (the x86 quantizer annotates
those alone), so such an upload got nothing: int8 PTQ failed its dry run ("convolution is not an aten conv2d
operator"), iPQ found no layer and structured pruning no channel group. Each rewrite computes the same function of
the same stored weight and keeps the traced value and module stack of the node it replaces, so the graph runs and is
analysed without a re-export. `x @ W.T` as `mm` with a bias added after is `weight_products_as_linear`'s. SiLU,
decomposed to `x * sigmoid(x)`, is one `silu` call again.
"""

from __future__ import annotations

import torch
from torch import fx

from compression.ptq.addmm_linear import as_linear_layer, stored_operand
from compression.ptq.graph_rewrites import mark_module_type, rewrite_calls, stored_parameter

aten = torch.ops.aten
_CONV = {1: aten.conv1d.default, 2: aten.conv2d.default, 3: aten.conv3d.default}
_CONV_TRANSPOSE = {1: aten.conv_transpose1d.default, 2: aten.conv_transpose2d.input, 3: aten.conv_transpose3d.input}
_CONV_MODULES = {spatial: f"torch.nn.modules.conv.Conv{spatial}d" for spatial in _CONV}
_LINEAR_MODULE = "torch.nn.modules.linear.Linear"
# What a decomposed linear layer puts between its operands and the bmm: broadcasting and flattening views.
_VIEWS = (aten.view.default, aten.expand.default, aten._unsafe_view.default, aten.reshape.default)


def core_aten_layers(graph: fx.GraphModule) -> dict[str, int]:
    """Rewrite, in place, the decomposed convolutions and linear layers of `graph` as layer calls; returns how many
    of each kind (only the kinds found)."""
    counts = {
        "convolutions": rewrite_calls(graph, aten.convolution.default, _convolution),
        # x * sigmoid(x): the quantizer fuses a conv with the SiLU after it, and took this product for a second
        # quantizable op in one pattern ("Several nodes within a single pattern", EfficientNet's blocks)
        "silus": rewrite_calls(graph, aten.mul.Tensor, _silu),
        "addmm_linears": rewrite_calls(graph, aten.addmm.default, _addmm_linear),
        "bmm_linears": _bmm_linears(graph),
    }
    if counts["addmm_linears"] or counts["bmm_linears"]:
        _linears_on_unflattened_inputs(graph)
        _layer_calls_alone_in_their_modules(graph)
    if counts["addmm_linears"] or counts["bmm_linears"] or counts["silus"]:
        _erase_unread(graph)
    return {kind: count for kind, count in counts.items() if count}


def _convolution(graph: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    if len(node.args) != 9 or node.kwargs:
        return None
    inputs, weight, bias, stride, padding, dilation, transposed, output_padding, groups = node.args
    spatial = len(stride) if isinstance(stride, (list, tuple)) else 0
    if spatial not in _CONV or not isinstance(transposed, bool):
        return None
    with graph.graph.inserting_before(node):
        if transposed:
            call = graph.graph.call_function(_CONV_TRANSPOSE[spatial], (
                inputs, weight, bias, stride, padding, output_padding, groups, dilation))
        else:
            if any(output_padding):
                return None
            call = graph.graph.call_function(_CONV[spatial], (inputs, weight, bias, stride, padding, dilation,
                                                              groups))
    module_type = _CONV_MODULES[spatial]
    _replaces(call, node, module_type.replace(".Conv", ".ConvTranspose") if transposed else module_type)
    return call


def _silu(graph: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    if len(node.args) != 2 or node.kwargs:
        return None
    for inputs, gate in (node.args, reversed(node.args)):
        if (isinstance(gate, fx.Node) and gate.target == aten.sigmoid.default and gate.args[0] is inputs
                and len(gate.users) == 1):
            with graph.graph.inserting_before(node):
                silu = graph.graph.call_function(aten.silu.default, (inputs,))
            silu.meta.update({key: value for key, value in node.meta.items()
                              if key in ("val", "nn_module_stack", "source_fn_stack")})
            return silu
    return None


def _addmm_linear(graph: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """addmm(b, x, permute(W, [1, 0])), W stored [out, in], b [out]: linear(x, W, b)."""
    if len(node.args) != 3 or node.kwargs.get("beta", 1) != 1 or node.kwargs.get("alpha", 1) != 1:
        return None
    bias, inputs, right = node.args
    weight, transposed = stored_operand(graph, right)
    weight = weight if transposed else None
    stored_bias = stored_parameter(graph, bias)
    if weight is None or stored_bias is None or tuple(stored_bias.shape) != (_stored(graph, weight).shape[0],):
        return None
    with graph.graph.inserting_before(node):
        linear = graph.graph.call_function(aten.linear.default, (inputs, weight, bias))
    _replaces(linear, node, _LINEAR_MODULE)
    return linear


def _bmm_linears(graph: fx.GraphModule) -> int:
    """bmm(views of x [..., in], views of permute(W, [1, 0]) broadcast over the batch), viewed back to x's leading
    dims and `out`: linear(x, W), replacing that last view (and a stored [out] bias added to it alone:
    `as_linear_layer`, which `x @ W.T` is rewritten with too)."""
    rewritten = 0
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and node.target == aten.bmm.default and _bmm_linear(graph, node):
            rewritten += 1
    return rewritten


def _bmm_linear(graph: fx.GraphModule, node: fx.Node) -> bool:
    left, right = node.args[:2]
    weight, transposed = stored_operand(graph, _views_of(right)[-1])
    if not transposed or len(node.users) != 1 or (view := next(iter(node.users))).target not in _VIEWS:
        return False
    out_features, in_features = _stored(graph, weight).shape
    result = view.meta.get("val")
    # The deepest of the views whose rows are the layer's inputs: a view keeps the order of the elements, so
    # rows of `in_features` viewed back to its leading dims are its rows (an expand that broadcast would not fit).
    inputs = next((candidate for candidate in reversed(_views_of(left)[1:])
                   if _rows_of(candidate, in_features, out_features, result)), None)
    # the bmm and the views before it are left without a reader, erased by `_erase_unread`
    return inputs is not None and as_linear_layer(graph, view, inputs, weight, True, right)


def _linears_on_unflattened_inputs(graph: fx.GraphModule) -> None:
    """linear(view(x, [rows, in]), W, b) viewed back to x's leading dims: linear(x, W, b), which the channel
    analysis of structured pruning follows (it stops at a view that mixes the channel axis with others)."""
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target != aten.linear.default or len(node.users) != 1:
            continue
        view = next(iter(node.users))
        if view.target not in _VIEWS:
            continue
        inputs, weight = node.args[:2]
        out_features, in_features = _stored(graph, weight).shape
        source = next((candidate for candidate in reversed(_views_of(inputs)[1:])
                       if _rows_of(candidate, in_features, out_features, view.meta.get("val"))), None)
        if source is None:
            continue
        node.args = (source, *node.args[1:])
        node.meta["val"] = view.meta["val"]
        view.replace_all_uses_with(node)
        graph.graph.erase_node(view)


def _replaces(new: fx.Node, old: fx.Node, module_type: str) -> None:
    new.meta.update({key: value for key, value in old.meta.items() if key in ("val", "tensor_meta")})
    mark_module_type(new, old, module_type)


def _views_of(node) -> list:
    """`node`, then what it views, and so on through `_VIEWS`, down to the first node that is no view."""
    chain = [node]
    while isinstance(node, fx.Node) and node.op == "call_function" and node.target in _VIEWS:
        node = node.args[0]
        chain.append(node)
    return chain


def _rows_of(node, in_features: int, out_features: int, result) -> bool:
    source = node.meta.get("val") if isinstance(node, fx.Node) else None
    return (source is not None and result is not None and source.dim() >= 2
            and _same_shape(source.shape[-1:], (in_features,))
            and _same_shape(result.shape, (*source.shape[:-1], out_features)))


def _layer_calls_alone_in_their_modules(graph: fx.GraphModule) -> None:
    """The decomposition's views and size arithmetic around a linear layer's product were traced inside its
    nn.Linear: moved to the enclosing module, so that the quantizer, which takes every call of a Linear module
    for one layer call, finds the linear call alone there."""
    layers = {_innermost(node) for node in graph.graph.nodes if node.target == aten.linear.default} - {None}
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target != aten.linear.default and _innermost(node) in layers:
            stack = dict(node.meta["nn_module_stack"])
            stack.popitem()
            node.meta["nn_module_stack"] = stack
            node.meta.pop("source_fn_stack", None)


def _innermost(node: fx.Node) -> tuple | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path, module_type = next(reversed(stack.values()))
    return (path, str(module_type)) if "Linear" in str(module_type) else None


def _stored(graph: fx.GraphModule, weight: fx.Node) -> torch.Tensor:
    return graph.get_parameter(weight.target)


def _same_shape(traced, expected) -> bool:
    """Whether two shapes are the same, symbolic sizes compared by their expressions."""
    return len(traced) == len(expected) and all(str(a) == str(b) for a, b in zip(traced, expected))


def _erase_unread(graph: fx.GraphModule) -> None:
    """Erase the transposes, views, products and gates the rewrites left without a reader, then recompile."""
    erasable = (*_VIEWS, aten.permute.default, aten.t.default, aten.bmm.default, aten.sigmoid.default)
    pending = [node for node in graph.graph.nodes if node.op == "call_function" and node.target in erasable]
    erased: set[fx.Node] = set()
    while pending:
        node = pending.pop()
        if node not in erased and not node.users and node.op == "call_function" and node.target in erasable:
            pending.extend(node.all_input_nodes)
            graph.graph.erase_node(node)
            erased.add(node)
    graph.graph.lint()
    graph.recompile()
