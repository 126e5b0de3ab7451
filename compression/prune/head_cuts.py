"""Where attention heads meet the cuts of the tensor that holds them: chunks, splits, unbinds and slices along the
heads' dimension (a projection's [q | k | v] rows cut into q, k and v), which must keep whole runs of heads apart,
and the literal sizes and bounds pruning rewrites there (`CutFound`)."""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from torch import fx

from compression.graph_ops import op_name
from compression.prune.channel_groups import CHANNELWISE_UNARY
from compression.prune.channel_layout import Layout, shape_of

PIECES = {"chunk", "split", "split_with_sizes", "unbind"}  # ops returning a list of pieces (`getitem` takes one)


class CutFound(NamedTuple):
    """Piece `piece` of a slice or split along the heads' dimension (`sizes`: its pieces as exported) holds
    `entries` per head of a walk over `count` heads."""

    node: fx.Node
    dim: int
    sizes: tuple[int, ...]
    piece: int
    entries: int
    count: int
    repeated: bool = False
    held: tuple[int, ...] = ()  # which of the layout's runs the piece holds


def run_extents(projection: fx.Node) -> list[int]:
    """The runs that the cuts of a projection's output along its last dimension make, every cut's bounds together
    (Phi-3's three slices; DBRX's split after a clamp; GPTBigCode's after an unsqueeze; Falcon-7B's along the heads
    after a view to (H + 2, D)): their extents in order, in rows of the projection."""
    width = shape_of(projection)[-1]
    bounds, nodes = {0, width}, [(projection, 1)]  # a tensor, and how many rows an index of its cut dimension is
    while nodes:
        node, rows = nodes.pop()
        rank = len(shape_of(node))
        for user in node.users:
            name = op_name(user) if user.op == "call_function" else ""
            if name in CHANNELWISE_UNARY and len(user.all_input_nodes) == 1 or \
                    name == "unsqueeze" and (shape_of(user) or (None,))[-1] == width and rows == 1:
                nodes.append((user, rows))
            elif rows == 1 and split_last(node, user) is not None:
                nodes.append((user, shape_of(user)[-1]))
            elif (name == "slice" or name in PIECES) and cut_dim(user, name, rank) == rank - (1 if rows == 1 else 2):
                sizes = piece_sizes(user, name, width // rows) or []
                bounds.update(rows * sum(sizes[:end]) for end in range(len(sizes)))
    bounds = sorted(bounds)
    return [end - start for start, end in zip(bounds, bounds[1:])]


def split_last(source: fx.Node, view: fx.Node) -> int | None:
    """The size of the new last dimension where `view` splits `source`'s last dimension in two (Falcon's
    `view(B, S, H + 2, D)` of its projection), else None."""
    if view.op != "call_function" or op_name(view) not in ("view", "reshape", "_unsafe_view"):
        return None
    before, after = shape_of(source), shape_of(view)
    if before is None or after is None or len(after) != len(before) + 1 or after[:-2] != before[:-1]:
        return None
    inner, outer = after[-1], after[-2]
    return inner if isinstance(inner, int) and isinstance(outer, int) and inner * outer == before[-1] else None


def cut_dim(node: fx.Node, name: str, rank: int) -> int:
    """The dimension a slice, chunk, split or unbind cuts."""
    position = 1 if name in ("slice", "unbind") else 2
    return (node.args[position] if len(node.args) > position else node.kwargs.get("dim", 0)) % rank


def cut_into_pieces(node: fx.Node, name: str, layout: Layout, shape, count: int, literals: list):
    """The heads' layout in every piece of a chunk, split or unbind: along another dimension, each piece has all
    the heads (GPT-NeoX's `chunk(qkv, 3, -1)` of each head's [q | k | v] values); along theirs, each piece must
    be whole runs of them (`cut_runs`)."""
    if shape is None:
        return None
    dim = cut_dim(node, name, len(shape))
    if dim != layout.dim:
        return replace(layout, dim=layout.dim - (dim < layout.dim)) if name == "unbind" else layout
    sizes = piece_sizes(node, name, shape[dim])
    return cut_runs(node, layout, shape, sizes, count, literals) if sizes else None


def piece_sizes(node: fx.Node, name: str, extent) -> list[int] | None:
    """The sizes of the pieces a slice (before, kept, after), split or chunk cuts a dimension of `extent` into."""
    if not isinstance(extent, int):
        return None
    args = list(node.args) + [None] * 5
    if name == "slice":
        start, end, step = args[2] or 0, args[3] if args[3] is not None else extent, args[4] or 1
        start, end = (min(max(bound + extent if bound < 0 else bound, 0), extent) for bound in (start, end))
        return [start, end - start, extent - end] if step == 1 and end > start else None
    if name == "split" and isinstance(args[1], int):
        return [min(args[1], extent - offset) for offset in range(0, extent, args[1])]
    if name == "split_with_sizes" and sum(args[1]) == extent:
        return list(args[1])
    if name == "chunk" and isinstance(args[1], int):
        size = -(-extent // args[1])
        return [min(size, extent - offset) for offset in range(0, extent, size)]
    return None


def cut_runs(node: fx.Node, layout: Layout, shape, sizes: list[int], count: int, literals: list):
    """The layouts of the pieces of a cut along the heads' dimension where the heads sit in runs (a projection's
    [q | k | v] rows: `layout.outer` alike, nanoGPT's `split(E, 2)` and Phi-3's `qkv[..., :E]`; or `layout.runs`
    of different sizes, Phi-3's grouped-query slices): each piece must hold whole runs, and its sizes are recorded
    for pruning to rewrite; None otherwise."""
    per_head = list(layout.runs) or ([layout.block] * layout.outer if layout.outer > 1 else [])
    bounds = [count * sum(per_head[:end]) for end in range(len(per_head) + 1)]
    if not per_head or bounds[-1] != shape[layout.dim]:
        return None
    pieces, at = [], 0
    for piece, size in enumerate(sizes):
        if at not in bounds or at + size not in bounds:
            return None
        first, last = bounds.index(at), bounds.index(at + size)
        held = per_head[first:last]
        at += size
        if len(set(held)) > 1:
            pieces.append(replace(layout, block=1, outer=len(held), runs=tuple(held)))
        else:
            pieces.append(replace(layout, block=held[0] if held else layout.block, outer=len(held), runs=()))
        if size:
            literals.append(CutFound(node, layout.dim, tuple(sizes), piece, sum(held), count,
                                     held=tuple(range(first, last))))
    return pieces
