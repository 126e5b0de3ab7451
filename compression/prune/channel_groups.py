"""Find which output channels of an exported graph must be pruned together (a torch.fx analysis pass).

Every conv/linear whose weight is a `get_attr` starts a channel group: the channels of its output. The pass follows
each tensor through ops that keep channels apart (BatchNorm, activations, pooling, dropout, flatten), records who
reads the channels (the next conv's or linear's input dimension, BatchNorm's per-channel parameters) and merges
groups whose tensors meet in an elementwise op: a residual `add` makes the block's output channels and its shortcut
channels one group, pruned with one set of indices or not at all. Any op the pass does not understand, and the
graph output, freezes the groups it touches: those channels are never pruned, so an unknown op can cost
compression but never correctness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import fx

aten = torch.ops.aten

_CHANNELWISE_UNARY = {
    "relu", "relu_", "gelu", "silu", "silu_", "sigmoid", "tanh", "hardtanh", "hardtanh_", "hardswish",
    "hardswish_", "hardsigmoid", "leaky_relu", "elu", "mish", "dropout", "clone", "contiguous", "alias", "detach",
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "max_pool1d", "avg_pool1d", "_to_copy", "to",
}
_ELEMENTWISE_BINARY = {"add", "add_", "sub", "mul", "div", "maximum", "minimum"}
_REDUCTIONS = {"mean", "sum", "amax"}
_BATCH_NORMS = {"batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
                "cudnn_batch_norm", "native_batch_norm"}
_RESHAPES = {"view", "reshape", "_unsafe_view"}


@dataclass(frozen=True)
class Slice:
    """Parameter or buffer `name` has one index along `dim` per group channel, `block` consecutive entries each
    (block > 1 where a linear reads a flattened conv output: channel c owns columns c*block .. c*block+block-1)."""

    name: str
    dim: int
    block: int = 1


@dataclass
class ChannelGroup:
    size: int
    producers: list[Slice] = field(default_factory=list)  # weights that create the channels (scored)
    slices: list[Slice] = field(default_factory=list)  # everything resized when channels go
    reshapes: list[tuple[fx.Node, int]] = field(default_factory=list)  # (view node, channel block) to rewrite
    frozen_because: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.frozen_because and bool(self.producers)


@dataclass
class _Track:
    group: int
    dim: int  # the dimension of the node's tensor that indexes the group's channels
    block: int = 1


class _Groups:
    """Union-find over channel groups."""

    def __init__(self):
        self.parent: list[int] = []
        self.groups: list[ChannelGroup] = []

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.groups.append(ChannelGroup(size))
        return len(self.parent) - 1

    def find(self, index: int) -> int:
        while self.parent[index] != index:
            self.parent[index] = self.parent[self.parent[index]]
            index = self.parent[index]
        return index

    def get(self, index: int) -> ChannelGroup:
        return self.groups[self.find(index)]

    def union(self, a: int, b: int, where: str) -> int:
        root_a, root_b = self.find(a), self.find(b)
        if root_a == root_b:
            return root_a
        group_a, group_b = self.groups[root_a], self.groups[root_b]
        self.parent[root_b] = root_a
        group_a.producers += group_b.producers
        group_a.slices += group_b.slices
        group_a.reshapes += group_b.reshapes
        group_a.frozen_because += group_b.frozen_because
        if group_a.size != group_b.size:
            group_a.frozen_because.append(f"{where} joins {group_a.size} and {group_b.size} channels")
        return root_a

    def freeze(self, index: int, reason: str) -> None:
        self.get(index).frozen_because.append(reason)

    def roots(self) -> list[ChannelGroup]:
        return [self.groups[i] for i in range(len(self.parent)) if self.find(i) == i]


def find_channel_groups(graph_module: fx.GraphModule) -> list[ChannelGroup]:
    """Channel groups of an exported graph module (nodes need the `meta["val"]` that torch.export records)."""
    groups = _Groups()
    tracks: dict[fx.Node, _Track] = {}
    for node in graph_module.graph.nodes:
        inputs = [arg for arg in node.all_input_nodes if arg in tracks]
        if node.op == "call_function":
            _visit(node, inputs, tracks, groups)
        elif inputs:
            reason = "graph output" if node.op == "output" else f"{node.op} {node.target}"
            for arg in inputs:
                groups.freeze(tracks[arg].group, reason)
    return _without_shared_slices(groups.roots())


def _op_name(node: fx.Node) -> str:
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    return getattr(packet, "__name__", None) or getattr(target, "__name__", str(target))


def _shape(node) -> tuple[int, ...] | None:
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    if isinstance(value, torch.Tensor):
        return tuple(int(s) if isinstance(s, int) else s for s in value.shape)
    return None


def _visit(node: fx.Node, inputs: list[fx.Node], tracks: dict, groups: _Groups) -> None:
    name = _op_name(node)
    if name in ("conv1d", "conv2d", "conv3d", "linear"):
        _visit_layer(node, name, tracks, groups)
        return
    if not inputs:
        return
    first = node.args[0] if node.args else None
    track = tracks.get(first) if isinstance(first, fx.Node) else None
    if name in _BATCH_NORMS and track is not None and track.dim == 1 and len(inputs) == 1:
        group = groups.get(track.group)
        for arg in node.args[1:5]:
            if isinstance(arg, fx.Node) and arg.op == "get_attr":
                group.slices.append(Slice(arg.target, 0))
        tracks[node] = track
    elif name == "getitem" and track is not None and node.args[1] == 0:
        tracks[node] = track
    elif name in _CHANNELWISE_UNARY and track is not None and len(inputs) == 1 and _same_rank(node, first):
        tracks[node] = track
    elif name in _ELEMENTWISE_BINARY and track is not None:
        _visit_binary(node, track, tracks, groups)
    elif name in _REDUCTIONS and track is not None and len(inputs) == 1:
        _visit_reduction(node, track, tracks, groups)
    elif name == "flatten" and track is not None:
        _visit_flatten(node, track, tracks, groups)
    elif name in _RESHAPES and track is not None:
        _visit_reshape(node, track, tracks, groups)
    else:
        for arg in inputs:
            groups.freeze(tracks[arg].group, f"{name} at {node.name}")


def _same_rank(node: fx.Node, source: fx.Node) -> bool:
    out, inp = _shape(node), _shape(source)
    return out is not None and inp is not None and len(out) == len(inp)


def _visit_layer(node: fx.Node, name: str, tracks: dict, groups: _Groups) -> None:
    source, weight = node.args[0], node.args[1]
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    conv_groups = node.args[6] if name != "linear" and len(node.args) > 6 else 1
    input_track = tracks.get(source) if isinstance(source, fx.Node) else None
    owns_weight = isinstance(weight, fx.Node) and weight.op == "get_attr" and conv_groups == 1
    if input_track is not None:
        # A conv reads channels on dim 1; a linear on its last dim, possibly as flattened blocks.
        reads_channels = input_track.dim == (len(_shape(source)) - 1 if name == "linear" else 1)
        if owns_weight and reads_channels and (name == "linear" or input_track.block == 1):
            groups.get(input_track.group).slices.append(Slice(weight.target, 1, input_track.block))
        else:
            groups.freeze(input_track.group, f"{name} at {node.name} cannot be resized")
    if not owns_weight:
        return
    out_shape = _shape(node)
    index = groups.new(out_shape[1] if name != "linear" else out_shape[-1])
    group = groups.get(index)
    producer = Slice(weight.target, 0)
    group.producers.append(producer)
    group.slices.append(producer)
    if isinstance(bias, fx.Node):
        if bias.op == "get_attr":
            group.slices.append(Slice(bias.target, 0))
        else:
            group.frozen_because.append(f"computed bias at {node.name}")
    tracks[node] = _Track(index, 1 if name != "linear" else len(out_shape) - 1)


def _visit_binary(node: fx.Node, track: _Track, tracks: dict, groups: _Groups) -> None:
    other = node.args[1] if len(node.args) > 1 else None
    if isinstance(other, fx.Node) and other in tracks:
        other_track = tracks[other]
        root = groups.union(track.group, other_track.group, f"{_op_name(node)} at {node.name}")
        if (track.dim, track.block) != (other_track.dim, other_track.block) or not _same_rank(node, other):
            groups.freeze(root, f"{node.name} combines channels on different dimensions")
        tracks[node] = _Track(root, track.dim, track.block)
        return
    if isinstance(other, fx.Node):
        other_shape, shape = _shape(other), _shape(node)
        # A tensor broadcast along the channel dimension (a scalar, a [N,1,H,W] map) leaves channels apart.
        broadcast = other_shape is not None and (
            len(other_shape) < len(shape) - track.dim or other_shape[track.dim - len(shape)] == 1)
        if not broadcast:
            groups.freeze(track.group, f"{node.name} combines channels with an unprunable tensor")
    if _same_rank(node, node.args[0]):
        tracks[node] = track
    else:
        groups.freeze(track.group, f"{node.name} changes rank")


def _visit_reduction(node: fx.Node, track: _Track, tracks: dict, groups: _Groups) -> None:
    rank = len(_shape(node.args[0]))
    dims = node.args[1] if len(node.args) > 1 else None
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    if not dims or track.block != 1:
        groups.freeze(track.group, f"{node.name} reduces over channels")
        return
    reduced = {d % rank for d in dims}
    if track.dim in reduced:
        groups.freeze(track.group, f"{node.name} reduces over channels")
        return
    dim = track.dim if keepdim else track.dim - sum(1 for d in reduced if d < track.dim)
    tracks[node] = _Track(track.group, dim)


def _visit_flatten(node: fx.Node, track: _Track, tracks: dict, groups: _Groups) -> None:
    shape = _shape(node.args[0])
    start = node.args[1] % len(shape) if len(node.args) > 1 else 0
    end = node.args[2] % len(shape) if len(node.args) > 2 else len(shape) - 1
    if track.dim < start:
        tracks[node] = track
    elif track.dim == start and end == len(shape) - 1 and start > 0:
        tracks[node] = _Track(track.group, start, track.block * math.prod(shape[start + 1:]))
    elif track.dim > end:
        tracks[node] = _Track(track.group, track.dim - (end - start), track.block)
    else:
        groups.freeze(track.group, f"{node.name} flattens channels into another dimension")


def _visit_reshape(node: fx.Node, track: _Track, tracks: dict, groups: _Groups) -> None:
    """Only the flatten written as `x.view(N, -1)` / `x.reshape(N, C*H*W)` is understood (and identity views)."""
    source_shape, shape = _shape(node.args[0]), _shape(node)
    if source_shape == shape:
        tracks[node] = track
    elif track.dim == 1 and len(shape) == 2 and len(source_shape) > 2 and shape[1] == math.prod(source_shape[1:]):
        block = track.block * math.prod(source_shape[2:])
        tracks[node] = _Track(track.group, 1, block)
        groups.get(track.group).reshapes.append((node, block))
    else:
        groups.freeze(track.group, f"{node.name} reshapes channels")


def _without_shared_slices(groups: list[ChannelGroup]) -> list[ChannelGroup]:
    """A tensor dimension claimed by two groups (a weight shared by two layers) cannot follow both: freeze them."""
    claims: dict[tuple[str, int], list[ChannelGroup]] = {}
    for group in groups:
        for piece in group.slices:
            claims.setdefault((piece.name, piece.dim), []).append(group)
    for (name, dim), claimants in claims.items():
        if len({id(g) for g in claimants}) > 1:
            for group in claimants:
                group.frozen_because.append(f"{name} dim {dim} is shared between channel groups")
    return groups
