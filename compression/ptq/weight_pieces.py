"""Layer weights cut from one stored parameter at every call, stored as pieces.

torch's MultiheadAttention attending across two inputs (`nn.TransformerDecoderLayer`'s cross-attention, a pooling
head's learned probe) splits its packed `in_proj_weight` and bias into the query's rows and the key/value's at
every call (`split_with_sizes(in_proj_weight, [E, 2E])`). Its linears read those pieces, not a stored weight, so
int8 PTQ, iPQ and pruning left them float (a quarter of a decoder layer's weights, with no warning). Each piece is
stored as a tensor of its own beside the packed one (`in_proj_weight_piece0`, `..._piece1`), which leaves the
program: the same values in the same bytes (with `kdim`/`vdim` it has a weight per input, and its bias is
chunked in three the same way). Done only where every piece is read as a layer's weight or bias and
nothing else reads the packed tensor.
"""

from __future__ import annotations

import operator

import torch
from torch import fx

from compression.ptq.computed_weights import LAYER_OPS, read_elsewhere
from compression.quant.graph import delete_tensor, get_tensor

aten = torch.ops.aten
_CUTS = (aten.split.Tensor, aten.split_with_sizes.default, aten.chunk.default)


def store_weight_pieces(graph_module: fx.GraphModule) -> list[str]:
    """Replace, in place, each stored tensor that the graph splits along its first dimension into layer weights or
    biases by one stored tensor per piece; returns the pieces' names."""
    stored = []
    with torch.no_grad():
        for node in list(graph_module.graph.nodes):
            if node.op == "get_attr" and len(node.users) == 1:
                stored += _store_pieces(graph_module, node, next(iter(node.users)))
    if stored:
        graph_module.graph.lint()
        graph_module.recompile()
    return stored


def _store_pieces(graph_module: fx.GraphModule, packed: fx.Node, cut: fx.Node) -> list[str]:
    dim = cut.args[2] if len(cut.args) > 2 else cut.kwargs.get("dim", 0)
    pieces = list(cut.users)
    if cut.op != "call_function" or cut.target not in _CUTS or cut.args[0] is not packed or dim != 0 \
            or not pieces or not all(_read_by_layers(piece) for piece in pieces) \
            or read_elsewhere(graph_module, [packed]):
        return []
    tensor = get_tensor(graph_module, packed.target)
    owner_path, _, leaf = packed.target.rpartition(".")
    owner = graph_module.get_submodule(owner_path) if owner_path else graph_module
    if any(hasattr(owner, f"{leaf}_piece{piece.args[1]}") for piece in pieces):
        return []  # the names are taken (by the model's own attributes): left as it is
    values = cut.target(tensor, *cut.args[1:], **cut.kwargs)
    names = []
    for piece in pieces:
        name = f"{leaf}_piece{piece.args[1]}"
        value = values[piece.args[1]].detach().clone()
        if isinstance(tensor, torch.nn.Parameter):
            owner.register_parameter(name, torch.nn.Parameter(value, requires_grad=tensor.requires_grad))
        else:
            owner.register_buffer(name, value)
        target = f"{owner_path}.{name}" if owner_path else name
        with graph_module.graph.inserting_before(piece):
            read = graph_module.graph.get_attr(target)
        if "val" in piece.meta:
            read.meta["val"] = piece.meta["val"]
        piece.replace_all_uses_with(read)
        graph_module.graph.erase_node(piece)
        names.append(target)
    graph_module.graph.erase_node(cut)
    graph_module.graph.erase_node(packed)
    delete_tensor(graph_module, packed.target)
    return names


def _read_by_layers(piece: fx.Node) -> bool:
    """`piece` is `getitem(cut, i)` and every reader takes it as a conv's or linear's weight or bias."""
    return piece.op == "call_function" and piece.target is operator.getitem and bool(piece.users) and all(
        user.op == "call_function" and user.target in LAYER_OPS and piece is not user.args[0]
        and piece in user.args[1:3] for user in piece.users)
