"""Attention heads as channel groups: the heads of q/k/v/o are removed together.

For each `scaled_dot_product_attention` node of an exported graph, q, k and v are followed back to the linear
layers that produce them (through the `view(N, S, H, D)` and `transpose(1, 2)` that split heads) and the output
forward to the linear that reads it (through the transpose and reshape that merge heads). A head is then D rows of
the q, k and v weights and biases and D columns of the output projection; literal head counts in the views are
rewritten (the `-1` that Hugging Face models write needs nothing). `torch.nn.MultiheadAttention`'s packed q/k/v
projection is `compression.prune.packed_attention_heads`' (called with `need_weights=True`, which computes the
attention with `bmm` and `softmax`: `compression.prune.folded_attention_heads`'). Decoders whose q and k pass
through rotary embeddings, per-head norms and a key/value cache, with or without grouped-query attention (Llama,
Qwen, Mistral, Gemma), attention written as matmul + softmax, and q/k/v cut from one projection's output (GPT-NeoX,
nanoGPT, Phi-3 without grouped-query attention) are `compression.prune.grouped_attention_heads`'. Per-head masks
and biases (ALiBi) are left alone.
"""

from __future__ import annotations

from torch import fx

from compression.graph_ops import op_name
from compression.prune.channel_groups import ChannelGroup, SizeLiteral, Slice
from compression.prune.channel_layout import Layout, permuted, regroup, shape_of, transposed
from compression.prune.folded_attention_heads import folded_head_group
from compression.prune.grouped_attention_heads import eager_head_group, grouped_head_group
from compression.prune.packed_attention_heads import packed_head_group

_MOVES = {"view", "reshape", "_unsafe_view", "transpose", "permute", "contiguous", "clone", "alias"}


def find_head_groups(graph_module: fx.GraphModule) -> list[ChannelGroup]:
    """One group per attention whose heads can be removed. An attention layer whose weights are shared and run
    again (ALBERT runs one layer N times) gives one group for all its calls: one choice of heads, and the sizes
    of every call's reshapes rewritten."""
    groups: dict[frozenset[Slice], ChannelGroup] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and op_name(node) == "scaled_dot_product_attention":
            group = _head_group(node) or packed_head_group(node) or grouped_head_group(node)
        elif node.op == "call_function" and op_name(node) in ("softmax", "_softmax"):
            # MultiheadAttention returning its weights (bmm and softmax), or attention written as matmul + softmax
            group = folded_head_group(node) or eager_head_group(node)
        else:
            continue
        if group is not None:
            same_weights = groups.setdefault(frozenset(group.slices), group)
            if same_weights is not group:
                same_weights.reshapes += group.reshapes
                same_weights.cuts += group.cuts
    return list(groups.values())


def _head_group(attention: fx.Node) -> ChannelGroup | None:
    query_shape = shape_of(attention.args[0])
    if query_shape is None or len(query_shape) != 4 or attention.kwargs.get("enable_gqa"):
        return None
    heads, head_dim = query_shape[1], query_shape[3]
    mask = attention.args[3] if len(attention.args) > 3 else attention.kwargs.get("attn_mask")
    mask_shape = shape_of(mask) if isinstance(mask, fx.Node) else None
    if not isinstance(heads, int) or not isinstance(head_dim, int) or (mask_shape and mask_shape[-3] != 1):
        return None
    group = ChannelGroup(heads, unit="heads")
    for position in range(3):
        projection = _producer(attention.args[position])
        if projection is None or len(projection.users) != 1 or shape_of(attention.args[position])[1] != heads:
            return None
        weight, bias = projection.args[1], projection.args[2] if len(projection.args) > 2 else None
        layout = Layout(len(shape_of(projection)) - 1, block=shape_of(projection)[-1] // heads)
        followed = _follow(projection, layout, heads, group)
        if followed is None or followed[0] is not attention or followed[1] != Layout(1):
            return None
        for tensor in (weight, bias):
            if isinstance(tensor, fx.Node):
                piece = Slice(tensor.target, 0, layout.block)
                group.slices.append(piece)
                if tensor is weight:
                    group.producers.append(piece)
    followed = _follow(attention, Layout(1), heads, group)
    if followed is None or op_name(followed[0]) != "linear" or not _owns_weight(followed[0]):
        return None
    reader, layout = followed
    if layout.dim != len(shape_of(reader.args[0])) - 1:
        return None
    group.slices.append(Slice(reader.args[1].target, 1, layout.block, layout.outer))
    return group


def _producer(node) -> fx.Node | None:
    """The linear layer (with its own weight) that `node` is a head-splitting view of."""
    while isinstance(node, fx.Node) and node.op == "call_function" and op_name(node) in _MOVES:
        node = node.args[0]
    if isinstance(node, fx.Node) and node.op == "call_function" and op_name(node) == "linear" and \
            _owns_weight(node):
        return node
    return None


def _owns_weight(node: fx.Node) -> bool:
    return all(isinstance(arg, fx.Node) and arg.op == "get_attr" for arg in node.args[1:3])


def _follow(start: fx.Node, layout: Layout, heads: int, group: ChannelGroup):
    """Walk from `start` through its single-user chain of layout moves; returns (first other node, the heads'
    layout in the tensor it reads), recording literal head counts in views on the way, or None if lost."""
    node = start
    while True:
        if len(node.users) != 1:
            return None
        user = next(iter(node.users))
        name = op_name(user) if user.op == "call_function" else ""
        if name not in _MOVES:
            return (user, layout) if user.args and user.args[0] is node or name == "scaled_dot_product_attention" \
                else None
        rank = len(shape_of(node))
        if name == "transpose":
            layout = transposed(layout, user.args[1], user.args[2], rank)
        elif name == "permute":
            layout = permuted(layout, list(user.args[1]), rank)
        elif name in ("view", "reshape", "_unsafe_view"):
            layout = regroup(shape_of(node), shape_of(user), layout, heads)
            if layout is None:
                return None
            size = user.args[1][layout.dim]
            if isinstance(size, int) and size != -1:
                group.reshapes.append(SizeLiteral(user, layout.dim, layout.block * layout.outer))
        node = user
