"""Attention heads of `torch.nn.MultiheadAttention` (ViTs written with `nn.TransformerEncoderLayer`, torchvision's
ViT, CLIP-style encoders), as channel groups.

Its self-attention computes q, k and v with one packed projection (`in_proj_weight`, rows [q | k | v], each
H heads of D rows) and splits them with ops `compression.prune.attention_heads` does not follow: `unflatten(-1,
[3, E])`, an unsqueeze/transpose/squeeze, `select(0, i)`, then `view(L, N * H, D)` (the heads times the dynamic
batch as one dimension), `transpose(0, 1)` and `view(N, H, L, D)`; after `scaled_dot_product_attention`,
`permute(2, 0, 1, 3)` and `reshape(L * N, E)` into `out_proj`. That exact sequence (`F.multi_head_attention_forward`
with `need_weights=False`, as `nn.TransformerEncoderLayer` calls it) is matched here. A head is D rows of each of
the three thirds of `in_proj_weight` and its bias (`outer` 3) and D columns of `out_proj`; the literal E and H in
the unflatten, views and reshape are rewritten, and the N * H product becomes -1. Attending across two inputs,
MultiheadAttention splits its packed projection at every call; once `compression.ptq.weight_pieces` has stored the
pieces, q comes from a projection of its own and k and v from one packed in 2 parts; with `kdim`/`vdim` each comes
from its own (`_multihead_group` takes any such mix). Called with `need_weights=True` it computes the attention with
bmm and softmax instead: `compression.prune.folded_attention_heads`. Masks per head are left alone: those heads
are not pruned.

timm's ViT attention packs q, k and v the same way but splits the projection's output with a reshape and
`unbind`: `compression.prune.grouped_attention_heads` follows that.
"""

from __future__ import annotations

from torch import fx

from compression.graph_ops import op_name
from compression.prune.channel_groups import ChannelGroup, SizeLiteral, Slice
from compression.prune.channel_layout import shape_of


def packed_head_group(attention: fx.Node) -> ChannelGroup | None:
    """The heads of the packed-projection attention (torch's MultiheadAttention or timm's) whose
    `scaled_dot_product_attention` is `attention`, or None."""
    query_shape = shape_of(attention.args[0])
    if query_shape is None or len(query_shape) != 4 or len(attention.args) > 3 or attention.kwargs.get("attn_mask") \
            is not None or attention.kwargs.get("enable_gqa"):
        return None
    heads, head_dim = query_shape[1], query_shape[3]
    if not isinstance(heads, int) or not isinstance(head_dim, int):
        return None
    return _multihead_group(attention, heads, head_dim)


def head_group(heads: int, head_dim: int, projections: list[tuple[fx.Node, int]], output: fx.Node,
               literals: list) -> ChannelGroup:
    """A head: D rows of each part of every (projection, parts) pair's weight and bias (3 parts for packed q/k/v,
    2 for packed k/v, 1 for a query's own), D columns of the output's."""
    group = ChannelGroup(heads, unit="heads", reshapes=literals)
    for projection, parts in projections:
        weight = Slice(projection.args[1].target, 0, head_dim, outer=parts)
        group.producers.append(weight)
        group.slices.append(weight)
        if len(projection.args) > 2 and isinstance(projection.args[2], fx.Node):
            group.slices.append(Slice(projection.args[2].target, 0, head_dim, outer=parts))
    group.slices.append(Slice(output.args[1].target, 1, head_dim))
    return group


def _multihead_group(attention: fx.Node, heads: int, head_dim: int) -> ChannelGroup | None:
    """q, k and v each selected from a packed projection (self-attention: one of 3 parts; across two inputs: k and v
    from one of 2 parts, the pieces `compression.ptq.weight_pieces` stores) or read from a projection of its own
    (the query across two inputs; q, k and v with `kdim`/`vdim`)."""
    literals, projections, packed = [], [], {}
    for position in range(3):
        source = _split_heads(attention.args[position], heads, head_dim, literals)
        if is_call(source, "linear") and stored_layer(source):
            projections.append((source, 1))
        elif is_call(source, "select", 0):
            packed.setdefault(source.args[0], []).append(source.args[2])
        else:
            return None
    width = heads * head_dim
    for pack, indices in packed.items():
        if indices != list(range(len(indices))):  # q, k, v in the packed order
            return None
        projections.append((packed_projection(pack, len(indices), width, head_dim, literals), len(indices)))
    merged = merged_heads(attention, ("permute", [2, 0, 1, 3]), width, head_dim, literals)
    if any(projection is None for projection, _ in projections) or merged is None:
        return None
    return head_group(heads, head_dim, projections, merged, literals)


def is_call(node, name: str, *args) -> bool:
    return (isinstance(node, fx.Node) and node.op == "call_function" and op_name(node) == name
            and tuple(node.args[1:1 + len(args)]) == args)


def sole_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _split_heads(per_head: fx.Node, heads: int, head_dim: int, literals: list[SizeLiteral]) -> fx.Node | None:
    """`view(transpose(view(source, [L, N * H, D]), 0, 1), [N, H, L, D])` -> source."""
    if not is_call(per_head, "view") or sole_user(per_head) is None:
        return None
    sizes = list(per_head.args[1])
    if len(sizes) != 4 or sizes[1] != heads or sizes[3] != head_dim:
        return None
    literals.append(SizeLiteral(per_head, 1, 1))
    return folded_heads(per_head.args[0], head_dim, literals)


def folded_heads(transposed: fx.Node, head_dim: int, literals: list[SizeLiteral]) -> fx.Node | None:
    """`transpose(view(source, [L, N * H, D]), 0, 1)` (the heads folded into the batch) -> source: a `select` of
    packed q/k/v, or a query's own projection; the N * H entry is to become -1."""
    if not is_call(transposed, "transpose", 0, 1) or sole_user(transposed) is None:
        return None
    folded = transposed.args[0]
    if not is_call(folded, "view") or sole_user(folded) is None:
        return None
    source = folded.args[0]
    sizes = list(folded.args[1])
    if sole_user(source) is None or len(sizes) != 3 or sizes[2] != head_dim:
        return None
    literals.append(SizeLiteral(folded, 1, 0, infer=True))
    return source


def packed_projection(packed: fx.Node, parts: int, width: int, head_dim: int,
                      literals: list[SizeLiteral]) -> fx.Node | None:
    """`contiguous(squeeze(transpose(unsqueeze(unflatten(linear, -1, [parts, E]), 0), 0, -2), -2))` -> the
    linear."""
    if len(packed.users) != parts:  # the selects alone: anything else reading the packed q/k/v would break
        return None
    node = packed
    for name, args in (("contiguous", ()), ("squeeze", (-2,)), ("transpose", (0, -2)), ("unsqueeze", (0,))):
        if not is_call(node, name, *args) or (node is not packed and sole_user(node) is None):
            return None
        node = node.args[0]
    if not is_call(node, "unflatten", -1, [parts, width]) or sole_user(node) is None:
        return None
    projection = node.args[0]
    if not is_call(projection, "linear") or sole_user(projection) is None or not stored_layer(projection):
        return None
    literals.append(SizeLiteral(node, 1, head_dim, arg=2))
    return projection


def merged_heads(attention: fx.Node, move: tuple, width: int, head_dim: int,
                 literals: list[SizeLiteral]) -> fx.Node | None:
    """`linear(reshape(move(attention), [..., E]), out_proj)` -> that linear: the heads merged back into E columns
    (`move`: the op and its arguments that bring the heads next to their D values)."""
    moved = sole_user(attention)
    if not is_call(moved, *move) or sole_user(moved) is None:
        return None
    merged = sole_user(moved)
    if not (is_call(merged, "reshape") or is_call(merged, "view")) or merged.args[0] is not moved \
            or merged.args[1][-1] != width:
        return None
    output = sole_user(merged)
    if not is_call(output, "linear") or output.args[0] is not merged or not stored_layer(output):
        return None
    literals.append(SizeLiteral(merged, len(merged.args[1]) - 1, head_dim))
    return output


def stored_layer(linear: fx.Node) -> bool:
    """A linear layer with its own weight, and its own bias or none (`bias=False`)."""
    weight, bias = linear.args[1], linear.args[2] if len(linear.args) > 2 else None
    return isinstance(weight, fx.Node) and weight.op == "get_attr" and (
        bias is None or isinstance(bias, fx.Node) and bias.op == "get_attr")
