"""Matrix products with a stored weight written as `aten.addmm` rewritten as `aten.linear`, so the x86 int8 recipe
quantizes them.

GPT-2's blocks (and the models derived from it: DistilGPT2, DialoGPT, ...) use transformers' `Conv1D`, which
computes `torch.addmm(bias, x, weight)` with the weight stored [in, out]. torchao's x86 inductor quantizer annotates
`linear` and `conv2d` only, so int8 PTQ quantized none of a GPT-2 block's four projections: a GPT-2 program came
back 1.1x smaller with only its classifier in int8. addmm(b, x, W) equals linear(x, W^T, b) exactly; the transposed
weight is stored beside the original (which the re-export then drops, as nothing reads it).

Falcon's `FalconLinear` (an nn.Linear subclass) computes `x @ self.weight.T` (+ bias): `matmul(x, numpy_T(W))` in
the exported graph, which no method took for a layer: default int8 PTQ of a Falcon model quantized only its
output layer and came back 1.15x smaller, structured pruning found nothing to cut. `matmul(x, W^T) + b` equals
`linear(x, W, b)` exactly and reads the same weight, so `weight_products_as_linear` rewrites it (and the
`x @ W` form, W stored [in, out], with a transposed copy as for addmm) once, on the upload's graph, for every
method. A layer written as `torch.einsum("bsi,oi->bso", x, W)` (einsum stays one op in the exported graph) is
the same product and is rewritten alike: default int8 PTQ left such a model's weights float.
"""

from __future__ import annotations

import torch
from torch import fx

from compression.ptq.graph_rewrites import (
    holds_float,
    mark_module_type,
    new_weight,
    rewrite_calls,
    stored_parameter,
    stored_tensor,
)

aten = torch.ops.aten
_ADDMM = aten.addmm.default
_PRODUCTS = (aten.matmul.default, aten.mm.default)
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
    stored, stored_bias = stored_tensor(graph, weight), stored_tensor(graph, bias)
    if stored is None or stored.dim() != 2 or stored_bias is None or tuple(stored_bias.shape) != stored.shape[1:]:
        return None  # a computed operand, or a bias that broadcasts over rows: not a layer
    with graph.graph.inserting_before(node):
        weight_t = new_weight(graph, weight, LINEAR_WEIGHT_SUFFIX, stored.detach().t().contiguous())
        linear = graph.graph.call_function(torch.ops.aten.linear.default, (inputs, weight_t, bias))
    mark_module_type(linear, node, "torch.nn.modules.linear.Linear")
    return linear


def weight_products_as_linear(graph: fx.GraphModule) -> int:
    """Rewrite, in place, every `matmul`/`mm` of an input by a stored 2-D weight, transposed (`x @ W.T`, W [out,
    in]: read as it is) or not (`x @ W`, W [in, out]: a transposed copy stored as for addmm), and every
    `einsum` that computes the same (`"...i,oi->...o"`, `"bsi,io->bso"`), with a stored [out] bias added to it
    alone, as `aten.linear`; returns how many. Each new node keeps the traced value and module
    stack of the node it replaces (its module's type set to nn.Linear), so the graph runs and is analysed
    without a re-export."""
    rewritten = 0
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and (node.target in _PRODUCTS and _product_as_linear(graph, node)
                                           or node.target == aten.einsum.default and _einsum_as_linear(graph, node)):
            rewritten += 1
    if rewritten:
        from compression.ptq.quantize import drop_unreferenced_tensors  # quantize imports this module

        drop_unreferenced_tensors(graph)
        graph.graph.lint()
        graph.recompile()
    return rewritten


_TRANSPOSES = {aten.numpy_T.default, aten.t.default, aten.transpose.int, aten.permute.default}


def _product_as_linear(graph: fx.GraphModule, node: fx.Node) -> bool:
    inputs, right = node.args[:2]
    weight, transposed = stored_operand(graph, right)
    return as_linear_layer(graph, node, inputs, weight, transposed, right)


def _einsum_as_linear(graph: fx.GraphModule, node: fx.Node) -> bool:
    """einsum("...i,oi->...o", x, W) (W [out, in]: x @ W.T) or "...i,io->...o" (W [in, out]: x @ W), the operands
    in either order, W a stored 2-D parameter: the linear layer it computes."""
    equation, operands = node.args[:2] if len(node.args) >= 2 else (None, None)
    if not isinstance(equation, str) or not isinstance(operands, (list, tuple)) or len(operands) != 2:
        return False
    sources, _, output = equation.replace(" ", "").partition("->")
    subscripts = sources.split(",")
    if len(subscripts) != 2 or not output:
        return False
    for (x_sub, w_sub), (inputs, right) in ((subscripts, operands), (subscripts[::-1], operands[::-1])):
        weight, transposed = stored_operand(graph, right)
        if weight is None or right is not weight or len(w_sub) != 2 or not x_sub:
            continue
        contracted, kept = (w_sub[1], w_sub[0]) if w_sub[0] not in x_sub else (w_sub[0], w_sub[1])
        letters = x_sub.replace("...", "")
        if (x_sub[-1] == contracted and kept not in x_sub and output == x_sub[:-1] + kept
                and len(set(letters)) == len(letters)):
            return as_linear_layer(graph, node, inputs, weight, w_sub == kept + contracted, right)
    return False


def as_linear_layer(graph: fx.GraphModule, node: fx.Node, inputs, weight: fx.Node | None, transposed: bool,
                     right) -> bool:
    """Replace the product `node` of `inputs` by the stored `weight` (`transposed`: read as W.T, W [out, in]) with
    aten.linear, folding a stored [out] bias added to it alone."""
    if weight is None or not isinstance(inputs, fx.Node) or not holds_float(inputs):
        return False
    if not transposed and _other_readers(graph, weight, node):
        return False  # its transposed copy would be stored beside the original, which others still read
    stored = stored_tensor(graph, weight)
    replaced, bias = node, None
    if len(node.users) == 1 and (add := next(iter(node.users))).target == aten.add.Tensor and not add.kwargs:
        other = add.args[1] if add.args[0] is node else add.args[0]
        stored_bias = stored_tensor(graph, other)
        out_features = stored.shape[0] if transposed else stored.shape[1]
        if stored_bias is not None and tuple(stored_bias.shape) == (out_features,):
            replaced, bias = add, other
    with graph.graph.inserting_before(replaced):
        if not transposed:
            weight = new_weight(graph, weight, LINEAR_WEIGHT_SUFFIX, stored.detach().t().contiguous())
        linear = graph.graph.call_function(aten.linear.default, (inputs, weight, bias))
    linear.meta.update({key: value for key, value in replaced.meta.items() if key in ("val", "tensor_meta")})
    mark_module_type(linear, node, "torch.nn.modules.linear.Linear")
    replaced.replace_all_uses_with(linear)
    graph.graph.erase_node(replaced)
    if replaced is not node:
        graph.graph.erase_node(node)
    if right is not weight and not right.users:  # the transpose nothing reads any more
        graph.graph.erase_node(right)
    return True


def stored_operand(graph: fx.GraphModule, operand) -> tuple[fx.Node | None, bool]:
    """(the get_attr of a 2-D float parameter, whether `operand` is its transpose) when `operand` is one of them;
    (None, False) for a computed operand (an activation, as attention's q @ k^T) and for a buffer or constant (a
    fixed matrix such as a mel filterbank is no layer to quantize or prune)."""
    transposed = False
    if isinstance(operand, fx.Node) and operand.op == "call_function" and operand.target in _TRANSPOSES:
        if not _swaps_two_dimensions(operand):
            return None, False
        operand, transposed = operand.args[0], True
    stored = stored_parameter(graph, operand)
    if stored is None or stored.dim() != 2 or not stored.is_floating_point():
        return None, False
    return operand, transposed


def _other_readers(graph: fx.GraphModule, weight: fx.Node, product: fx.Node) -> bool:
    readers = [user for node in graph.graph.find_nodes(op="get_attr", target=weight.target) for user in node.users]
    return readers != [product]


def _swaps_two_dimensions(node: fx.Node) -> bool:
    if node.target == aten.permute.default:
        return list(node.args[1]) == [1, 0]
    if node.target == aten.transpose.int:
        return {node.args[1] % 2, node.args[2] % 2} == {0, 1}
    return True  # numpy_T, t: of a 2-D tensor, the transpose
