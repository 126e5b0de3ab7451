"""Attention heads followed through what Hugging Face decoders do to q, k and v between their projections and
`scaled_dot_product_attention` (Llama, Mistral, Qwen2/3, Gemma and their kin), as channel groups.

`compression.prune.attention_heads` follows one chain of views and transposes. These models do more on the way:
rotary position embeddings (`q * cos + cat(-q[..., D/2:], q[..., :D/2]) * sin`: the tensor has several users that
meet again), a norm over each head's D values (Qwen3's q_norm/k_norm: an RMSNorm over the last dimension with one
weight shared by the heads), an append to the (empty) key/value cache (`cat` along the sequence), and with
grouped-query attention a repeat of each of the KV key/value heads for H / KV query heads (`unsqueeze(2)`,
`expand(B, KV, H / KV, S, D)`, `reshape(B, H, S, D)`; or `enable_gqa=True`, where the attention repeats them
itself). Here every use of a projection's output is followed in graph order with the position of its heads
(`head_walk.follow_heads`): through layout moves, pointwise ops whose other operand is the same tensor or the same
for every head (cos and sin, a norm's weight, a mask, a scalar), slices, splits, concats and stacks along other
dimensions (a concat's other inputs empty; Cohere's and GLM's interleaved rotary stacks each head's halves), norms
and reductions over other dimensions (Persimmon's LayerNorm over each head), until it reaches the attention. Any
other use, and the heads are left alone: OLMo 2's RMSNorm over all heads' q values at once, for one, ties them.

The same walk finds attention written as matmul + softmax (`eager_head_group`: transformers' eager attention,
Gemma 2's soft-capped scores, attention written by hand): from the softmax back to the scores' `q @ k^T` and on to
`probabilities @ v`, the scores' heads followed like the others. And q, k and v made by one projection: packed per
head (GPT-NeoX's rows [q_h | k_h | v_h], cut apart once the heads are viewed apart) or in runs (rows [q | k | v]:
nanoGPT's `split(E, 2)`, Phi-3's slices `qkv[..., :E]`, timm's reshape to (3, H, D)), where a head is D rows of
each run and the split sizes and slice bounds are rewritten. Runs of different head counts (Phi-3's grouped-query
`qkv_proj`, rows [q | k | v] of H, KV and KV heads; DBRX's `Wqkv`) are found from where the projection's output is
cut (`head_cuts.run_extents`): a unit holds H / KV heads' rows of the first run and one head's of each other.
Falcon-40B's packed groups (per key/value head: its queries, key and value, viewed as (KV, H / KV + 2, D)) are
tried with the group count read from that view.

A unit of pruning is one key/value head with the query heads that read it (one head without grouped-query
attention; Llama-3-8B's 32 query heads over 8 key/value heads are 8 units of 4): D rows of k's and v's projections
(weights and biases), H / KV heads of q's rows, and their columns of the output projection, found the same way
from the attention's output. The literal head counts in views, reshapes and the repeat's expand are rewritten, so a
pruned model keeps the grouping (H / KV query heads per key/value head) it was trained with. With one key/value
head (multi-query attention: Gemma-2B, PaliGemma) that unit would be everything, so there the query heads are the
units: their rows of q's projection and columns of the output projection go, the key/value head stays, and the
repeat's count of it (the expand's H, the reshape after it) follows the query heads. Where the query heads come
out of the key/value head's projection (GPTBigCode's runs [q | k | v] split after an unsqueeze, Falcon-7B's viewed
as (H + 2, D) and split along the heads), each piece of the cut is walked on its own (`_fused_queries`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import fx

from compression.graph_ops import op_name
from compression.prune.channel_groups import (
    CHANNELWISE_UNARY,
    ChannelGroup,
    CutLiteral,
    SizeLiteral,
    Slice,
)
from compression.prune.channel_layout import Layout, shape_of
from compression.prune.head_cuts import CutFound, run_extents
from compression.prune.head_walk import (
    LITERAL_SIZES,
    POINTWISE_BINARY,
    RepeatFound,
    SizeFound,
    follow_heads,
    graph_order,
)
from compression.prune.packed_attention_heads import stored_layer

_SIZES = (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool)
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
    readers = [(attention, position) for position in range(3)]
    return _head_group(operands, readers, [shape[3] for shape in shapes], attention, heads, [])


def eager_head_group(softmax: fx.Node) -> ChannelGroup | None:
    """The heads of attention written as matmul + softmax (transformers' eager attention: Gemma 2's soft-capped
    scores, models without SDPA; attention written by hand), whose probabilities `softmax` computes: scores = q @
    k^T (scaled, capped, masked: pointwise with values shared by every head), softmax over the keys, context =
    probabilities @ v. None if the scores or probabilities go anywhere else."""
    shape = shape_of(softmax)
    if shape is None or len(shape) != 4 or not isinstance(shape[1], int) or softmax.args[1] % 4 != 3:
        return None
    scores = _scores(softmax.args[0])
    if scores is None:
        return None
    heads, order, literals = shape[1], graph_order(softmax), []
    probabilities = follow_heads(scores, Layout(1), heads, order, literals)
    if probabilities is None or len(probabilities) != 1 or probabilities[0][1:] != (0, Layout(1)) or \
            op_name(probabilities[0][0]) != "matmul":
        return None
    context = probabilities[0][0]
    operands = (scores.args[0], scores.args[1], context.args[1])
    shapes = [shape_of(operand) for operand in operands]
    if any(operand_shape is None or len(operand_shape) != 4 or operand_shape[1] != heads for operand_shape in shapes):
        return None
    head_dims = [shapes[0][3], shapes[0][3], shapes[2][3]]  # k^T is (B, H, D, S): k's heads are q's width
    return _head_group(operands, [(scores, 0), (scores, 1), (context, 1)], head_dims, context, heads, literals)


def _scores(node) -> fx.Node | None:
    """The 4-D `matmul` that the pointwise ops before a softmax (scale, soft cap, mask) start from."""
    for _ in range(16):
        if not isinstance(node, fx.Node) or node.op != "call_function":
            return None
        name = op_name(node)
        if name == "matmul":
            return node if len(shape_of(node) or ()) == 4 else None
        if name not in CHANNELWISE_UNARY and name not in POINTWISE_BINARY:
            return None
        same = [arg for arg in node.all_input_nodes if shape_of(arg) == shape_of(node)]
        if len(same) != 1:
            return None
        node = same[0]
    return None


def _head_group(operands, readers: list, head_dims: list[int], output: fx.Node, heads: int,
                literals: list) -> ChannelGroup | None:
    """The group of the attention whose q, k and v (`operands`) are read by `readers` ((node, argument) each) and
    whose context, with the heads on dim 1, is `output`; `literals`: those found between."""
    order = graph_order(output)
    projections: dict[fx.Node, list[int]] = {}  # q, k and v may come from one projection (packed per head)
    for position, operand in enumerate(operands):
        projection = _projection(operand)
        if projection is None:
            return None
        projections.setdefault(projection, []).append(position)
    found = []  # (projection, the operands it makes, its heads, their layout in its output, literals on the way)
    for projection, positions in projections.items():
        own = []
        made = _projection_heads(projection, positions, operands, readers, head_dims, heads, order, own)
        if made is None or made[0] == 1 and len(positions) > 1:
            # q made with the one key/value head (GPTBigCode's runs): one unit, its query heads walked on their own
            fused = _fused_queries(projection, positions, readers, head_dims[0], heads, order)
            if fused is not None:
                made = (1, fused)
            elif made is None:
                return None
        found.append((projection, positions, *made, own))
    units = min(count for _, _, count, _, _ in found)
    if any(count % units for _, _, count, _, _ in found):
        return None
    ends = follow_heads(output, Layout(1), heads, order, literals)
    if ends is None or len(ends) != 1:
        return None
    reader, arg, layout = ends[0]
    if op_name(reader) != "linear" or arg != 0 or not stored_layer(reader) or \
            layout.dim != len(shape_of(reader.args[0])) - 1:
        return None
    output_columns = Slice(reader.args[1].target, 1, layout.block, layout.outer)  # per head of the attention
    if units == 1 and heads > 1:
        return _query_head_group(found, output_columns, heads, literals)
    group = ChannelGroup(units, unit="heads")
    for projection, _, count, start, own in found:
        _add_rows(group, projection, _row_slices(projection.args[1].target, start, count, units))
        literals = literals + own
    group.slices.append(replace(output_columns, block=output_columns.block * heads // units))
    _add_literals(group, literals, units)
    return group


def _query_head_group(found: list, output_columns: Slice, heads: int, literals: list) -> ChannelGroup | None:
    """Multi-query attention (one key/value head for every query head: Gemma-2B's, PaliGemma's): the query heads
    are the units. The key/value projections stay whole; the literal counts of query heads are rewritten: the query
    walk's, and on the key/value walks the repeat's expand and what follows it."""
    group, counted = ChannelGroup(heads, unit="heads"), list(literals)  # the scores' and output's: query heads
    for projection, positions, count, start, own in found:
        if isinstance(start, _FusedQueries):  # q made with the key/value head (GPTBigCode)
            _add_rows(group, projection, [start.rows])
            group.cuts += start.cuts
            group.reshapes += start.repeats
            counted += start.literals
        elif 0 in positions:
            if positions != [0] or count != heads:
                return None
            _add_rows(group, projection, _row_slices(projection.args[1].target, start, count, heads))
            counted += own
        else:
            after, repeats = _counting_queries(own)
            counted += after
            group.reshapes += repeats
    group.slices.append(output_columns)
    _add_literals(group, counted, heads)
    return group


class _FusedQueries(NamedTuple):
    """The query heads of a projection that also makes the one key/value head (GPTBigCode's multi-query rows [q | k
    | v] of H heads, one and one): the q run's rows, the cuts' pieces that hold or precede it, the literal counts of
    query heads on the way to the attention (the q walk's, and the key/value walks' after the repeat) and the
    repeat's own counts."""

    rows: Slice
    cuts: list
    literals: list
    repeats: list


def _fused_queries(projection: fx.Node, positions: list[int], readers: list, head_size: int, heads: int,
                   order: dict) -> _FusedQueries | None:
    """The query heads of a multi-query projection of runs [q | k | v], each piece walked on its own (q over its H
    heads, k and v over their one), or None."""
    runs = (heads * head_size, head_size, head_size)
    if sorted(positions) != [0, 1, 2] or heads == 1 or tuple(run_extents(projection)) != runs:
        return None
    cuts = []  # where the runs are cut apart (split pieces, or each slice with what lies before and after it)
    follow_heads(projection, Layout(len(shape_of(projection)) - 1, runs=runs), 1, order, cuts)
    cuts = [cut for cut in cuts if isinstance(cut, CutFound)]
    queries = {cut.entries for cut in cuts if cut.held == (0,)}  # the q run's entries along the cut dimension
    if len(queries) != 1 or next(iter(queries)) % heads:
        return None
    per_query = next(iter(queries)) // heads  # one head's: D rows (GPTBigCode), one index of (H + 2, D) (Falcon)
    literals, repeats, reached = [], [], []
    for cut in cuts:
        if op_name(cut.node) == "slice":  # a slice's pieces before and after it are nothing to walk
            pieces = [cut.node] if cut.piece == 1 else []
        else:
            pieces = [user for user in cut.node.users if op_name(user) == "getitem" and user.args[1] == cut.piece]
        if pieces and len(cut.held) != 1:
            return None
        run = cut.held[0]
        count = heads if run == 0 else 1
        for piece in pieces:
            walked = []
            ends = follow_heads(piece, Layout(cut.dim, block=cut.entries // count), count, order, walked)
            if ends is None or len(ends) != 1 or ends[0][:2] != readers[run]:
                return None
            layout, reader_heads = ends[0][2], shape_of(readers[run][0].args[readers[run][1]])[1]
            if layout.dim != 1 or layout.outer != 1 or count * layout.block * heads // reader_heads != heads:
                return None
            reached.append(run)
            after, repeated = _counting_queries(walked)
            literals += walked if run == 0 else after
            repeats += repeated
    if sorted(reached) != [0, 1, 2]:
        return None
    rows = Slice(projection.args[1].target, 0, head_size, extent=sum(runs))  # the q run comes first
    pieces = [CutLiteral(cut.node, cut.dim, cut.sizes, cut.piece, per_query) for cut in cuts if 0 in cut.held]
    return _FusedQueries(rows, pieces, literals, repeats)


def _counting_queries(literals: list) -> tuple[list, list[SizeLiteral]]:
    """What a key/value walk of multi-query attention found that counts query heads: the literals after the
    repeat, and the repeat's own entry (one per query head)."""
    after = [literal for literal in literals if isinstance(literal, (SizeFound, CutFound)) and literal.repeated]
    return after, [SizeLiteral(literal.node, literal.index, 1) for literal in literals
                   if isinstance(literal, RepeatFound)]


def _add_rows(group: ChannelGroup, projection: fx.Node, rows: list[Slice]) -> None:
    """A projection's rows of the group's heads (and its bias's), which score them."""
    for piece in rows:
        group.producers.append(piece)
        group.slices.append(piece)
        if len(projection.args) > 2 and isinstance(projection.args[2], fx.Node):
            group.slices.append(replace(piece, name=projection.args[2].target))


def _add_literals(group: ChannelGroup, literals: list, units: int) -> None:
    """Each literal counts `entries` per head of the walk that found it, which had `count` heads."""
    group.reshapes += [SizeLiteral(found.node, found.index, found.entries * found.count // units, arg=found.arg)
                       for found in literals if isinstance(found, SizeFound)]
    group.cuts += [CutLiteral(found.node, found.dim, found.sizes, found.piece, found.entries * found.count // units)
                   for found in literals if isinstance(found, CutFound)]


def _viewed_counts(projection: fx.Node) -> list[int]:
    """The sizes a packed projection's output is viewed into (Falcon's (KV, H / KV + 2, D) groups of each key/value
    head's queries, key and value): candidates for how many heads, or groups of heads, it makes."""
    rank, found, nodes = len(shape_of(projection)), [], [projection]
    for _ in range(2):  # a view, and a view of it
        nodes = [user for node in nodes for user in node.users
                 if user.op == "call_function" and op_name(user) in LITERAL_SIZES - {"expand"}]
        found += [size for node in nodes for size in (shape_of(node) or ())[rank - 1:] if isinstance(size, int)]
    return found


def _row_slices(weight: str, start: Layout, count: int, units: int) -> list[Slice]:
    """The rows of a projection that makes `count` heads at `start` in its output, for a group of `units`: one
    slice, or one per run where its runs differ in size (each covering its part of the rows)."""
    if not start.runs:
        return [Slice(weight, 0, start.block * count // units, start.outer)]
    extent, rows, at = count * sum(start.runs), [], 0
    for run in start.runs:
        rows.append(Slice(weight, 0, run * count // units, start=at, extent=extent))
        at += run * count
    return rows


def _projection_heads(projection: fx.Node, positions: list[int], operands, readers: list, head_dims: list[int],
                      heads: int, order: dict, literals: list) -> tuple[int, Layout] | None:
    """How many heads `projection` makes and where they sit in its output, if every use of that output reaches the
    readers of the operands at `positions`, each with its heads on dim 1 in order, each of them repeated for
    `layout.block` of the attention's heads (the repeat_kv of grouped-query attention, or SDPA's own with
    enable_gqa); else None. A projection may make several of q, k and v: packed per head (GPT-NeoX's rows [q_h |
    k_h | v_h] for each head h, cut apart after the heads are) or in runs (rows [q | k | v], nanoGPT's and Phi-3's
    with as many key/value heads as query heads, cut apart by a split or slices, or timm's reshape to (3, H, D);
    Phi-3's grouped-query runs of H, KV and KV heads)."""
    width = (shape_of(projection) or (None,))[-1]
    if not isinstance(width, int):
        return None
    rank, own = len(shape_of(projection)), sum(head_dims[position] for position in positions)
    counts = dict.fromkeys([width // own if width % own == 0 else 0] + [shape_of(operands[p])[1] for p in positions]
                           + (_viewed_counts(projection) if len(positions) > 1 else []))
    starts = [(count, Layout(rank - 1, block=width // count)) for count in counts if count and width % count == 0]
    if len(positions) > 1 and len({head_dims[p] for p in positions}) == 1:
        size = head_dims[positions[0]]
        if width % own == 0:
            starts.append((width // own, Layout(rank - 1, block=size, outer=len(positions))))
        extents = run_extents(projection)
        if len(set(extents)) > 1 and all(extent % size == 0 for extent in extents):
            units = math.gcd(*(extent // size for extent in extents))  # KV: it divides H
            starts.append((units, Layout(rank - 1, runs=tuple(extent // units for extent in extents))))
    for count, start in starts:
        found = []
        ends = follow_heads(projection, start, count, order, found)
        if ends is None or sorted(readers.index((end, arg)) if (end, arg) in readers else -1
                                  for end, arg, _ in ends) != positions:
            continue
        if all(layout.dim == 1 and layout.outer == 1 and not layout.runs and
               count * layout.block * heads // shape_of(end.args[arg])[1] == heads for end, arg, layout in ends):
            literals += found
            return count, start
    return None


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
        if isinstance(node.meta.get("val"), _SIZES):  # a size (the dynamic batch's), not data
            continue
        if node.op == "call_function" and op_name(node) == "linear":
            if not stored_layer(node):
                return None
            found.add(node)
            continue
        stack.extend(node.all_input_nodes)
    return found.pop() if len(found) == 1 else None

