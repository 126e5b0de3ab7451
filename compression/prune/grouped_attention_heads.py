"""Attention heads followed through what Hugging Face decoders do to q, k and v between their projections and
`scaled_dot_product_attention` (Llama, Mistral, Qwen2/3, Gemma and their kin), as channel groups.

`compression.prune.attention_heads` follows one chain of views and transposes. These models do more on the way:
rotary position embeddings (`q * cos + cat(-q[..., D/2:], q[..., :D/2]) * sin`: the tensor has several users that
meet again), a norm over each head's D values (Qwen3's q_norm/k_norm: an RMSNorm over the last dimension with one
weight shared by the heads), an append to the (empty) key/value cache (`cat` along the sequence), and with
grouped-query attention a repeat of each of the KV key/value heads for H / KV query heads (`unsqueeze(2)`,
`expand(B, KV, H / KV, S, D)`, `reshape(B, H, S, D)`; or `enable_gqa=True`, where the attention repeats them
itself). Here every use of a projection's output is followed in graph order with the position of its heads
(`channel_layout.Layout`): through layout moves, pointwise ops whose other operand is the same tensor or the same
for every head (cos and sin, a norm's weight, a scalar), slices and concats along other dimensions (a concat's
other inputs empty), and reductions over other dimensions, until it reaches the attention. Any other use, and the
heads are left alone.

A unit of pruning is one key/value head with the query heads that read it (one head without grouped-query
attention; Llama-3-8B's 32 query heads over 8 key/value heads are 8 units of 4): D rows of k's and v's projections
(weights and biases), H / KV heads of q's rows, and their columns of the output projection, found the same way
from the attention's output. The literal head counts in views, reshapes and the repeat's expand are rewritten, so a
pruned model keeps the grouping (H / KV query heads per key/value head) it was trained with.
"""

from __future__ import annotations

import heapq
from dataclasses import replace

import torch
from torch import fx

from compression.graph_ops import op_name
from compression.prune.channel_groups import (
    CHANNELWISE_UNARY,
    ELEMENTWISE_BINARY,
    ChannelGroup,
    SizeLiteral,
    Slice,
    checks_dtype_only,
)
from compression.prune.channel_layout import Layout, permuted, regroup, shape_of, transposed
from compression.prune.packed_attention_heads import stored_layer

_MOVES = {"view", "reshape", "_unsafe_view", "flatten", "unsqueeze", "squeeze"}
_LITERAL_SIZES = {"view", "reshape", "_unsafe_view", "expand"}  # their size list may spell the head count
_REDUCTIONS = {"mean", "sum", "amax"}
_SEARCHED = 400  # nodes looked at on the way back from an operand to its projection (the rotary tables' ops)


def grouped_head_group(attention: fx.Node) -> ChannelGroup | None:
    """The heads of the attention whose `scaled_dot_product_attention` is `attention`, or None."""
    operands = attention.args[:3]
    shapes = [shape_of(operand) for operand in operands]
    if any(shape is None or len(shape) != 4 or not isinstance(shape[1], int) or not isinstance(shape[3], int)
           for shape in shapes) or _mask_per_head(attention):
        return None
    heads = shapes[0][1]
    if not attention.kwargs.get("enable_gqa") and any(shape[1] != heads for shape in shapes):
        return None
    order = {node: index for index, node in enumerate(attention.graph.nodes)}
    found, literals = [], []  # found: (projection, its heads, head_dim); literals: (node, arg, index, entries, from)
    for position, operand in enumerate(operands):
        projection = _projection(operand)
        head_dim = shapes[position][3]
        projected = shape_of(projection) if projection is not None else None
        if not projected or not isinstance(projected[-1], int) or projected[-1] % head_dim:
            return None
        count = projected[-1] // head_dim
        start = Layout(len(projected) - 1, block=head_dim)
        ends = _follow_heads(projection, start, count, order, literals, position)
        if ends is None or len(ends) != 1:
            return None
        end, arg, layout = ends[0]
        # the attention reads this operand only, its heads on dim 1 in order, each repeated for `layout.block`
        # of the operand's heads (the repeat_kv of grouped-query attention, or the attention's own with enable_gqa)
        repeat = layout.block * heads // shapes[position][1]
        if end is not attention or arg != position or layout.dim != 1 or layout.outer != 1 or count * repeat != heads:
            return None
        found.append((projection, count, head_dim))
    units = min(count for _, count, _ in found)
    if any(count % units for _, count, _ in found):
        return None
    ends = _follow_heads(attention, Layout(1), heads, order, literals, 3)
    if ends is None or len(ends) != 1:
        return None
    output, arg, layout = ends[0]
    if op_name(output) != "linear" or arg != 0 or not stored_layer(output) or \
            layout.dim != len(shape_of(output.args[0])) - 1:
        return None
    group = ChannelGroup(units, unit="heads")
    for projection, count, head_dim in found:
        rows = Slice(projection.args[1].target, 0, head_dim * count // units)
        group.producers.append(rows)
        group.slices.append(rows)
        if len(projection.args) > 2 and isinstance(projection.args[2], fx.Node):
            group.slices.append(replace(rows, name=projection.args[2].target))
    group.slices.append(Slice(output.args[1].target, 1, layout.block * heads // units, layout.outer))
    per_start = [count for _, count, _ in found] + [heads]
    group.reshapes = [SizeLiteral(node, index, entries * per_start[source] // units, arg=arg)
                      for node, arg, index, entries, source in literals]
    return group


def _mask_per_head(attention: fx.Node) -> bool:
    mask = attention.args[3] if len(attention.args) > 3 else attention.kwargs.get("attn_mask")
    shape = shape_of(mask) if isinstance(mask, fx.Node) else None
    return bool(shape) and len(shape) >= 3 and shape[-3] != 1


def _projection(operand: fx.Node) -> fx.Node | None:
    """The one linear layer with its own weight that `operand` is computed from (looking back no further than the
    first linear on each path), or None."""
    found, seen, stack = set(), set(), [operand]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if len(seen) > _SEARCHED:
            return None
        if not isinstance(node.meta.get("val"), torch.Tensor):  # a size (the dynamic batch's), not data
            continue
        if node.op == "call_function" and op_name(node) == "linear":
            if not stored_layer(node):
                return None
            found.add(node)
            continue
        stack.extend(node.all_input_nodes)
    return found.pop() if len(found) == 1 else None


def _follow_heads(start: fx.Node, layout: Layout, count: int, order: dict, literals: list, source: int):
    """Every use of `start`'s heads (`count` of them, at `layout`), followed in graph order: the (node, argument
    position, layout) where they reach an attention or a linear layer, or None where an op would mix them.
    Literal head counts on the way are added to `literals`, tagged with `source`."""
    layouts = {start: layout}
    pending = [(order[user], user) for user in start.users]
    heapq.heapify(pending)
    ends, done = [], set()
    while pending:
        _, node = heapq.heappop(pending)
        if node in done:
            continue
        done.add(node)
        name = op_name(node) if node.op == "call_function" else ""
        if name in ("scaled_dot_product_attention", "linear"):
            tracked = [position for position, arg in enumerate(node.args) if arg in layouts]
            if len(tracked) != 1:
                return None
            ends.append((node, tracked[0], layouts[node.args[tracked[0]]]))
            continue
        if checks_dtype_only(node, name) or name.startswith("sym_"):  # dtype checks and the dynamic sizes' reads
            continue
        passed = _passed(node, name, layouts, count, literals, source)
        if passed is None:
            return None
        layouts[node] = passed
        for user in node.users:
            heapq.heappush(pending, (order[user], user))
    return ends


def _passed(node: fx.Node, name: str, layouts: dict, count: int, literals: list, source: int) -> Layout | None:
    """The heads' layout in `node`'s output, if the op keeps every head's values apart from the others'."""
    tracked = [arg for arg in node.all_input_nodes if arg in layouts]
    first = node.args[0] if node.args else None
    shape = shape_of(node)
    if shape is None:
        return None
    if name == "cat":
        return _concatenated(node, layouts)
    if name in ELEMENTWISE_BINARY:
        layout = layouts[tracked[0]]
        return layout if _same_for_every_head(node, layouts, layout, shape) else None
    if first not in layouts or len(tracked) != 1:
        return None
    layout, source_shape = layouts[first], shape_of(first)
    if source_shape is None:
        return None
    rank = len(source_shape)
    if name in CHANNELWISE_UNARY:
        return layout if len(node.all_input_nodes) == 1 and len(shape) == rank else None
    if name == "transpose":
        return transposed(layout, node.args[1], node.args[2], rank)
    if name == "permute":
        return permuted(layout, list(node.args[1]), rank)
    if name in ("slice", "select"):
        dim = node.args[1] % rank
        if dim != layout.dim:
            return layout if name == "slice" else replace(layout, dim=layout.dim - (dim < layout.dim))
        whole = name == "slice" and node.args[2:3] in ((), (0,), (None,)) and \
            (len(node.args) < 4 or node.args[3] is None or node.args[3] >= source_shape[dim]) and node.args[4:] in \
            ((), (1,))
        return layout if whole else None
    if name in _REDUCTIONS:
        dims = node.args[1] if len(node.args) > 1 else None
        keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
        reduced = {d % rank for d in dims or ()}
        if not reduced or layout.dim in reduced:
            return None
        return replace(layout, dim=layout.dim if keep else layout.dim - sum(d < layout.dim for d in reduced))
    if name == "expand":
        moved = replace(layout, dim=layout.dim + len(shape) - rank)
        if shape[moved.dim] != source_shape[layout.dim]:
            return None
        _note_literal(node, moved, literals, source)
        return moved
    if name in _MOVES:
        moved = regroup(source_shape, shape, layout, count)
        if moved is not None and name in _LITERAL_SIZES:
            _note_literal(node, moved, literals, source)
        return moved
    return None


def _note_literal(node: fx.Node, layout: Layout, literals: list, source: int) -> None:
    size = list(node.args[1])[layout.dim]
    if isinstance(size, int) and size != -1:
        literals.append((node, 1, layout.dim, layout.block * layout.outer, source))


def _same_for_every_head(node: fx.Node, layouts: dict, layout: Layout, shape: tuple) -> bool:
    """A pointwise op of the heads with themselves (the same layout) or with values shared by every head."""
    for arg in node.args:
        if arg in layouts:
            if layouts[arg] != layout or len(shape_of(arg) or ()) != len(shape):
                return False
        elif isinstance(arg, fx.Node):
            other = shape_of(arg)
            at = layout.dim - (len(shape) - len(other)) if other is not None else None
            if other is None or at is not None and at >= 0 and other[at] != 1:
                return False
    return True


def _concatenated(node: fx.Node, layouts: dict) -> Layout | None:
    """A concat along another dimension of the heads with themselves or with empty tensors (a cache's start)."""
    pieces, dim = node.args[0], node.args[1] if len(node.args) > 1 else 0
    tracked = [layouts[piece] for piece in pieces if piece in layouts]
    if not tracked or any(layout != tracked[0] for layout in tracked):
        return None
    layout, rank = tracked[0], len(shape_of(node) or ())
    if not rank:
        return None
    for piece in pieces:
        shape = shape_of(piece)
        if piece not in layouts and (shape is None or 0 not in shape or len(shape) != 1):
            return None
    return layout if dim % rank != layout.dim else None
