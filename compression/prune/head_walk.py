"""The walk that follows attention heads from a tensor that holds them (a projection's output, the attention's
context, its scores) through everything a model does to them, in graph order, with the position of the heads in
each tensor (`channel_layout.Layout`): layout moves, pointwise ops whose other operand is the same tensor or the
same for every head, slices, splits, concats and stacks along other dimensions, norms and reductions over other
dimensions, grouped-query attention's repeat of each key/value head, until an attention, a linear layer or a
matmul reads them. On the way it notes the literal sizes that count heads (`SizeFound`, `RepeatFound`,
`head_cuts.CutFound`), which pruning rewrites. Any op that would mix heads ends the walk with None.
`compression.prune.grouped_attention_heads` turns walks into head groups."""

from __future__ import annotations

import heapq
from dataclasses import replace
from typing import NamedTuple

from torch import fx

from compression.graph_ops import op_name
from compression.prune.channel_groups import CHANNELWISE_UNARY, ELEMENTWISE_BINARY, checks_dtype_only
from compression.prune.channel_layout import Layout, permuted, regroup, shape_of, transposed
from compression.prune.head_cuts import PIECES, cut_into_pieces, cut_runs, piece_sizes, split_last

_MOVES = {"view", "reshape", "_unsafe_view", "flatten", "unflatten", "unsqueeze", "squeeze"}
LITERAL_SIZES = {"view", "reshape", "_unsafe_view", "expand"}  # their size list may spell the head count
_REDUCTIONS = {"mean", "sum", "amax"}
_SOFTMAX = {"softmax", "_softmax"}
# pointwise ops of several tensors (a mask's where/masked_fill: the mask shared by every head)
POINTWISE_BINARY = ELEMENTWISE_BINARY | {"masked_fill", "where"}
_READERS = {"scaled_dot_product_attention", "linear", "matmul"}  # where a walk ends


class SizeFound(NamedTuple):
    """Entry `index` of a view's (reshape's, expand's) size list, argument `arg` (an unflatten's sizes come third),
    holds `entries` per head of a walk over `count` heads; `repeated`: after the key/value heads were repeated for
    the query heads (so it counts query heads)."""

    node: fx.Node
    index: int
    entries: int
    count: int
    repeated: bool = False
    arg: int = 1


class RepeatFound(NamedTuple):
    """Entry `index` of an expand's size list repeats each key/value head for its query heads (repeat_kv's
    `expand(B, KV, H / KV, S, D)`)."""

    node: fx.Node
    index: int


def graph_order(node: fx.Node) -> dict:
    return {other: index for index, other in enumerate(node.graph.nodes)}


def follow_heads(start: fx.Node, layout: Layout, count: int, order: dict, literals: list):
    """Every use of `start`'s heads (`count` of them, at `layout`), followed in graph order: the (node, argument
    position, layout) where they reach an attention or a linear layer, or None where an op would mix them.
    Literal head counts on the way are added to `literals` (`SizeFound`, `CutFound`)."""
    layouts = {start: layout}
    pending = [(order[user], user) for user in start.users]
    heapq.heapify(pending)
    ends, done = [], set()
    repeated = set()  # the nodes after an expand that repeats each head (repeat_kv's)
    while pending:
        _, node = heapq.heappop(pending)
        if node in done:
            continue
        done.add(node)
        name = op_name(node) if node.op == "call_function" else ""
        if name in _READERS:
            ends += [(node, position, layouts[arg]) for position, arg in enumerate(node.args) if arg in layouts]
            continue
        if checks_dtype_only(node, name) or name.startswith("sym_"):  # dtype checks and the dynamic sizes' reads
            continue
        found = []
        passed = _passed(node, name, layouts, count, found)
        if passed is None:
            return None
        layouts[node] = _one_head(node, passed) if count == 1 else passed
        after_repeat = any(arg in repeated for arg in node.all_input_nodes)
        literals += [literal._replace(repeated=True) if after_repeat and not isinstance(literal, RepeatFound)
                     else literal for literal in found]
        if after_repeat or any(isinstance(literal, RepeatFound) for literal in found):
            repeated.add(node)
        for user in node.users:
            heapq.heappush(pending, (order[user], user))
    return ends


def _passed(node: fx.Node, name: str, layouts: dict, count: int, literals: list) -> Layout | None:
    """The heads' layout in `node`'s output, if the op keeps every head's values apart from the others'."""
    tracked = [arg for arg in node.all_input_nodes if arg in layouts]
    first = node.args[0] if node.args else None
    if name == "getitem" and first in layouts:  # a piece of a chunk/split/unbind
        pieces = layouts[first]
        return pieces[node.args[1]] if isinstance(pieces, list) else pieces
    if any(isinstance(layouts[arg], list) for arg in tracked):  # the pieces' list read by anything but getitem
        return None
    if any(layouts[arg].runs for arg in tracked):
        moved = _runs_moved(node, name, first, layouts.get(first))
        if moved is not None or name not in CHANNELWISE_UNARY | PIECES | {"slice"}:
            return moved
    if name in PIECES and first in layouts and len(tracked) == 1:
        return cut_into_pieces(node, name, layouts[first], shape_of(first), count, literals)
    shape = shape_of(node)
    if shape is None:
        return None
    if name == "cat":
        return _concatenated(node, layouts)
    if name == "stack":  # Cohere's and GLM's interleaved rotary: stack([-x2, x1], -1) of each head's halves
        return _stacked(node, layouts)
    if name == "type_as" and first in layouts:  # the second tensor gives only the dtype (Gemma 3's norms)
        return layouts[first] if len(shape) == len(shape_of(first) or ()) else None
    if name in ("reshape_as", "view_as") and first in layouts and shape_of(first):  # the second: only a shape
        return regroup(shape_of(first), shape, layouts[first], count)  # (RoFormer's rotary)
    if name in POINTWISE_BINARY:
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
    if name in _SOFTMAX:
        return layout if node.args[1] % rank != layout.dim else None
    if name in ("layer_norm", "rms_norm"):  # over each head's values alone (Persimmon's qk_layernorm)
        return layout if len(node.args[1]) < rank - layout.dim else None
    if name == "transpose":
        return transposed(layout, node.args[1], node.args[2], rank)
    if name == "permute":
        return permuted(layout, list(node.args[1]), rank)
    if name in ("slice", "select"):
        dim = node.args[1] % rank
        if dim != layout.dim:
            return layout if name == "slice" else replace(layout, dim=layout.dim - (dim < layout.dim))
        if name == "select":
            return None
        sizes = piece_sizes(node, name, source_shape[dim])
        if sizes is not None and sizes[0] == sizes[2] == 0:  # all of it
            return layout
        pieces = cut_runs(node, layout, source_shape, sizes, count, literals) if sizes else None
        return pieces[1] if pieces else None
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
        _note_literal(node, moved, literals, count)
        _note_repeat(node, moved.dim + 1, shape, source_shape, literals)
        return moved
    if name in _MOVES:
        moved = regroup(source_shape, shape, layout, count)
        if moved is not None and name in LITERAL_SIZES:
            _note_literal(node, moved, literals, count)
        if moved is not None and name == "unflatten":  # Falcon's (H, 3) of each head's q, k and v
            _note_unflattened(node, moved, source_shape, literals, count)
        return moved
    return None


def _one_head(node: fx.Node, layout):
    """A walk of one head (multi-query attention's key/value head) has every entry of the tensor in that head, so
    any dimension would do as its own and a reshape picks the first that fits (the sequence, in GPTBigCode's (B, 1,
    S, D) key): the head is kept on the tensor's first dimension of size one after the batch, where the model
    spells its one head (before the repeat's dimension, `expand(B, 1, H, S, D)`)."""
    shape = shape_of(node)
    if not isinstance(layout, Layout) or layout.runs or shape is None:
        return layout
    ones = [dim for dim in range(1, len(shape)) if shape[dim] == 1]
    return Layout(ones[0]) if ones else layout


def _runs_moved(node: fx.Node, name: str, source, layout: Layout | None) -> Layout | None:
    """Runs of different sizes through an unsqueeze in front (GPTBigCode's) or a view that splits their rows
    (Falcon-7B's (H + 2, D)); None for any other op: before they are cut apart only a clamp (DBRX's) and the cut
    itself may read them."""
    if layout is None or not layout.runs:
        return None
    if name == "unsqueeze":
        return replace(layout, dim=layout.dim + (node.args[1] % (len(shape_of(source)) + 1) <= layout.dim))
    inner = split_last(source, node) if layout.dim == len(shape_of(source)) - 1 else None
    if inner and all(run % inner == 0 for run in layout.runs):
        return replace(layout, runs=tuple(run // inner for run in layout.runs))
    return None


def _note_literal(node: fx.Node, layout: Layout, literals: list, count: int) -> None:
    size = list(node.args[1])[layout.dim]
    if isinstance(size, int) and size != -1:
        literals.append(SizeFound(node, layout.dim, layout.block * layout.outer, count))


def _note_unflattened(node: fx.Node, layout: Layout, source_shape: tuple, literals: list, count: int) -> None:
    index = layout.dim - node.args[1] % len(source_shape)  # the heads' entry among the sizes the dimension becomes
    sizes = list(node.args[2])
    if 0 <= index < len(sizes) and isinstance(sizes[index], int) and sizes[index] != -1:
        literals.append(SizeFound(node, index, layout.block * layout.outer, count, arg=2))


def _note_repeat(node: fx.Node, index: int, shape: tuple, source_shape: tuple, literals: list) -> None:
    """An expand's entry right after the heads' that broadcasts a dimension of one: repeat_kv's H / KV."""
    source = index - (len(shape) - len(source_shape))
    sizes = list(node.args[1])
    if index < len(shape) and 0 <= source < len(source_shape) and source_shape[source] == 1 and \
            isinstance(sizes[index], int) and sizes[index] > 1:
        literals.append(RepeatFound(node, index))


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


def _stacked(node: fx.Node, layouts: dict) -> Layout | None:
    """A stack of the heads with themselves (every piece tracked alike) along a new dimension."""
    pieces, rank = node.args[0], len(shape_of(node) or ())
    tracked = [layouts.get(piece) for piece in pieces]
    if not rank or any(layout is None or layout != tracked[0] for layout in tracked):
        return None
    dim = (node.args[1] if len(node.args) > 1 else 0) % rank
    return replace(tracked[0], dim=tracked[0].dim + (dim <= tracked[0].dim))


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
