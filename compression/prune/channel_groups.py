"""Find which output channels of an exported graph must be pruned together (a torch.fx analysis pass).

Every conv/linear whose weight is a `get_attr` starts a channel group: the channels of its output. The pass follows
each tensor through ops that keep channels apart and tracks where the channels sit (`channel_layout.Layout`):
activations, dropout, BatchNorm and InstanceNorm, depthwise convs (one filter per channel: its filters, bias entries
and `groups` count go with the channels), pooling, upsampling and padding over other dimensions, softmax over another
dimension, permutes and transposes (the channel axis moves), slicing other dimensions, reshapes that keep the channels
together (flatten into a linear, `permute(0, 2, 1, 3).reshape(N, -1)`, squeeze/unsqueeze). It records who reads the
channels (the next conv's or linear's input dimension, BatchNorm's per-channel parameters) and merges groups whose
tensors meet in an elementwise op: a residual `add` makes the block's output channels and its shortcut channels one
group, pruned with one set of indices or not at all. A tensor may carry several groups side by side: a concat along
the channel dimension (DenseNet, Inception, UNet skips) gives each input's groups a segment of the output's
channels, at the offset of the earlier inputs' channel counts, so the concat's readers lose the matching columns; a
concat along another dimension keeps the channels where they are, like an elementwise op. A split, chunk, slice or
narrow along another dimension keeps the channels in every piece; along the channel dimension each piece carries
the groups that fall in it, at their offset in the piece (`operator.getitem` picks a split's piece), and a group the
cut goes through is split into one group per run of its channels (`_Groups.split`: its slices, BatchNorms and
tracked tensors hold each run at its offset). Runs that meet again in an elementwise op are merged like a residual:
the two halves of a gated linear unit (`a, b = proj(x).chunk(2, -1); gelu(a) * b`) become one group whose producer
slices are rows j and I + j of the fused weight. The split sizes and slice bounds are recorded (`CutLiteral`) so
that pruning can rewrite them. A cut with a step, inside a flattened channel's block or across `outer` runs freezes.
Any other op (layer norm, unbind, attention), and the graph output, freezes the groups it touches: those channels
are never pruned, so an unknown op can cost compression but never correctness. Attention heads are found by
`compression.prune.attention_heads`, the hidden units of LSTM, GRU and RNN ops by
`compression.prune.recurrent_channels` (a group that reads the op's input and one that its outputs carry on).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import torch
from torch import fx

from compression.graph_ops import op_name
from compression.prune.channel_layout import Layout, pads_dim, permuted, regroup, shape_of, transposed

aten = torch.ops.aten

CHANNELWISE_UNARY = {
    "relu", "relu_", "relu6", "gelu", "silu", "silu_", "sigmoid", "tanh", "hardtanh", "hardtanh_", "hardswish",
    "hardswish_", "hardsigmoid", "leaky_relu", "elu", "selu", "celu", "mish", "softplus", "log_sigmoid", "abs",
    "neg", "exp", "log", "sqrt", "rsqrt", "square", "pow", "clamp", "clamp_min", "clamp_max", "dropout",
    "feature_dropout", "alpha_dropout", "clone", "contiguous", "alias", "detach", "_to_copy", "to", "type_as",
    # more pointwise functions of one value (the exact GELU written out: x * 0.5 * (1 + erf(x / sqrt 2)))
    "erf", "erfc", "erfinv", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "atanh", "sign",
    "sgn", "reciprocal", "exp2", "expm1", "log1p", "log2", "log10", "floor", "ceil", "round", "trunc", "frac",
    "logit", "nan_to_num", "hardshrink", "softshrink", "threshold", "gelu_", "sigmoid_", "tanh_", "leaky_relu_",
    "elu_",
}
ELEMENTWISE_BINARY = {"add", "add_", "sub", "mul", "div", "maximum", "minimum"}
_REDUCTIONS = {"mean", "sum", "amax"}
# per-channel normalizations whose args 1-4 are weight, bias, running mean and running variance (instance norm:
# statistics per sample and channel, so channels stay apart as in BatchNorm; its running stats are usually None)
_BATCH_NORMS = {"batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
                "cudnn_batch_norm", "native_batch_norm", "instance_norm"}
_RESHAPES = {"view", "reshape", "_unsafe_view", "flatten", "squeeze", "unsqueeze"}
_LITERAL_SHAPES = {"view", "reshape", "_unsafe_view"}  # their size list may spell the channel count
_POOLING = re.compile(r"^(adaptive_)?(max|avg|lp)_pool([123])d(_with_indices)?$")
_SOFTMAX = {"softmax", "_softmax", "log_softmax", "_log_softmax"}
# a transposed conv's weight is (in, out, *kernel): it reads channels on dim 0 and makes them on dim 1
_LAYERS = {"conv1d", "conv2d", "conv3d", "linear", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_RECURRENT = {"lstm", "gru", "rnn_tanh", "rnn_relu"}
# ops that cut a tensor into pieces along one dimension (a slice or narrow keeps one piece)
_CUTS = {"split", "split_with_sizes", "chunk", "slice", "narrow"}
_UPSAMPLING = re.compile(r"^_?upsample_(nearest|nearest_exact|linear|bilinear|bicubic|trilinear)([123])d(_aa)?$")


@dataclass(frozen=True)
class Slice:
    """Parameter or buffer `name` has one index along `dim` per group channel, as `outer` runs of the group's
    channels with `block` consecutive entries each (block > 1 where a linear reads a flattened conv output: channel
    c owns columns c*block .. c*block+block-1; outer > 1 where the channels were moved inside the time axis). After
    a concat the group's channels start at slot `offset` of runs of `span` channel slots (span 0: the group's size;
    see `channel_layout.Layout`). Where that covers only part of the dimension (one of a projection's runs of
    different sizes), it starts at entry `start` of a dimension of `extent` entries (0: it covers all of it)."""

    name: str
    dim: int
    block: int = 1
    outer: int = 1
    offset: int = 0
    span: int = 0
    start: int = 0
    extent: int = 0


@dataclass(frozen=True)
class SizeLiteral:
    """Position `index` of a view/reshape node's size list (argument `arg`: an unflatten's sizes come third) holds
    `per_channel` entries per group channel. `infer`: the entry is a product with a symbolic size (the heads times
    the dynamic batch that torch's MultiheadAttention views as one dimension); pruning writes -1 there."""

    node: fx.Node
    index: int
    per_channel: int
    arg: int = 1
    infer: bool = False


@dataclass(frozen=True)
class CutLiteral:
    """Piece `piece` of a split/chunk/slice/narrow `node` along dimension `dim` holds `per_channel` entries per group
    channel. `sizes` are the node's pieces as exported (a slice's or narrow's: what lies before, in and after it), so
    pruning can shrink the group's piece and rewrite the node's sizes or bounds."""

    node: fx.Node
    dim: int
    sizes: tuple[int, ...]
    piece: int
    per_channel: int


@dataclass(frozen=True)
class GroupsLiteral:
    """A depthwise conv `node`'s `groups` argument (at `index`): one group per channel it carries."""

    node: fx.Node
    index: int


@dataclass
class ChannelGroup:
    size: int
    producers: list[Slice] = field(default_factory=list)  # weights that create the channels (scored)
    slices: list[Slice] = field(default_factory=list)  # everything resized when channels go
    reshapes: list[SizeLiteral] = field(default_factory=list)  # literal sizes to rewrite
    cuts: list[CutLiteral] = field(default_factory=list)  # split sizes and slice bounds to rewrite
    conv_groups: list[GroupsLiteral] = field(default_factory=list)  # depthwise convs' group counts to rewrite
    # BatchNorm (weight, running_var, eps, offset of the group's channels in them)
    norms: list[tuple[str, str, float, int]] = field(default_factory=list)
    frozen_because: list[str] = field(default_factory=list)
    unit: str = "channels"  # or "heads"

    @property
    def prunable(self) -> bool:
        return not self.frozen_because and bool(self.producers)


@dataclass
class _Track:
    """One group's channels in a tensor; a tensor's tracks list every group it carries (several after a concat).
    The tracks of a split's (list) output say which piece each is in; `getitem` takes one piece's."""

    group: int
    layout: Layout
    piece: int | None = None


class _Groups:
    """Union-find over channel groups."""

    def __init__(self):
        self.parent: list[int] = []
        self.groups: list[ChannelGroup] = []
        self.retired: set[int] = set()  # roots replaced by their runs (see `split`)

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
        group_a.cuts += group_b.cuts
        group_a.conv_groups += group_b.conv_groups
        group_a.norms += group_b.norms
        group_a.frozen_because += group_b.frozen_because
        if group_a.size != group_b.size:
            group_a.frozen_because.append(f"{where} joins {group_a.size} and {group_b.size} channels")
        return root_a

    def freeze(self, index: int, reason: str) -> None:
        self.get(index).frozen_because.append(reason)

    def split(self, index: int, cuts: list[int], tracks: dict) -> None:
        """Make the runs of a group's channels between `cuts` groups of their own (a split op cuts the group there;
        the runs are then pruned apart, or together again where their pieces meet in an elementwise op). Every
        slice, BatchNorm and tensor that held the group holds each run at the run's offset in the group's old
        channels; literal sizes and split sizes count each run's channels where they counted the group's."""
        root = self.find(index)
        whole = self.groups[root]
        bounds = [0, *cuts, whole.size]
        runs = []
        for start, stop in zip(bounds, bounds[1:]):
            run = self.new(stop - start)
            self.groups[run] = ChannelGroup(
                stop - start, producers=[_shifted(p, start, whole.size) for p in whole.producers],
                slices=[_shifted(p, start, whole.size) for p in whole.slices], reshapes=list(whole.reshapes),
                cuts=list(whole.cuts), conv_groups=list(whole.conv_groups),
                frozen_because=list(whole.frozen_because), unit=whole.unit,
                norms=[(weight, variance, eps, offset + start) for weight, variance, eps, offset in whole.norms])
            runs.append((run, start))
        self.retired.add(root)
        for node, node_tracks in tracks.items():
            if any(self.find(track.group) == root for track in node_tracks):
                tracks[node] = [piece for track in node_tracks for piece in (
                    [replace(track, group=run, layout=_shifted(track.layout, start, whole.size)) for run, start in runs]
                    if self.find(track.group) == root else [track])]

    def roots(self) -> list[ChannelGroup]:
        return [self.groups[i] for i in range(len(self.parent)) if self.find(i) == i and i not in self.retired]


def find_channel_groups(graph_module: fx.GraphModule) -> list[ChannelGroup]:
    """Channel groups of an exported graph module (nodes need the `meta["val"]` that torch.export records)."""
    groups = _Groups()
    tracks: dict[fx.Node, list[_Track]] = {}
    for node in graph_module.graph.nodes:
        inputs = [arg for arg in node.all_input_nodes if arg in tracks]
        if node.op == "call_function":
            _visit(node, inputs, tracks, groups)
        elif inputs:
            _freeze(inputs, tracks, groups, "graph output" if node.op == "output" else f"{node.op} {node.target}")
    return _without_shared_slices(groups.roots())


def _freeze(nodes: list[fx.Node], tracks: dict, groups: _Groups, reason: str) -> None:
    for node in nodes:
        for track in tracks.get(node, []):
            groups.freeze(track.group, reason)


def _visit(node: fx.Node, inputs: list[fx.Node], tracks: dict, groups: _Groups) -> None:
    name = op_name(node)
    if name in _LAYERS:
        _visit_layer(node, name, tracks, groups)
        return
    if name in _RECURRENT:
        _visit_recurrent(node, name, tracks, groups)
        return
    if not inputs or checks_dtype_only(node, name):
        return
    if name == "cat":
        _visit_cat(node, inputs, tracks, groups)
        return
    first = node.args[0] if node.args else None
    segments = tracks.get(first) if isinstance(first, fx.Node) else None
    if segments and any(track.piece is not None for track in segments):  # the list a split returns
        picked = [replace(track, piece=None) for track in segments if track.piece == node.args[1]] \
            if name == "getitem" and len(inputs) == 1 else None
        if picked is None:
            _freeze(inputs, tracks, groups, f"{name} at {node.name} of a split's pieces")
        elif picked:
            tracks[node] = picked
        return
    if name in _CUTS and segments and len(inputs) == 1:
        _visit_cut(node, name, segments, tracks, groups)
        return
    # only its first argument may be tracked for the op to keep channels apart
    layouts = [_passes(node, name, track, groups) for track in segments] if segments and len(inputs) == 1 else None
    if layouts and all(layout is not None for layout in layouts):
        tracks[node] = [_Track(track.group, layout) for track, layout in zip(segments, layouts)]
    elif name in ELEMENTWISE_BINARY and segments:
        _visit_binary(node, segments, tracks, groups)
    else:
        _freeze(inputs, tracks, groups, f"{name} at {node.name}")


def checks_dtype_only(node: fx.Node, name: str) -> bool:
    """`_assert_tensor_metadata` that checks a dtype or device (what export records for a `.to(dtype)`, GPT-OSS's
    attention) outputs nothing and holds for any channel count; one that checks a size or stride would not."""
    return (name == "_assert_tensor_metadata" and node.kwargs.get("size") is None
            and node.kwargs.get("stride") is None and len(node.args) < 2)


def _passes(node: fx.Node, name: str, track: _Track, groups: _Groups) -> Layout | None:
    """The layout of the channels in `node`'s output when the op keeps them apart, else None."""
    layout, source = track.layout, node.args[0]
    shape, rank = shape_of(source), len(shape_of(source) or ())
    if name in _BATCH_NORMS:
        if layout.dim != 1 or not layout.plain:
            return None
        group = groups.get(track.group)
        for arg in node.args[1:5]:
            if isinstance(arg, fx.Node) and arg.op == "get_attr":
                group.slices.append(Slice(arg.target, 0, offset=layout.offset, span=layout.span))
        weight, variance = node.args[1], node.args[4]
        if all(isinstance(arg, fx.Node) and arg.op == "get_attr" for arg in (weight, variance)):
            eps = next(arg for arg in reversed(node.args) if isinstance(arg, float))  # eps comes after momentum
            group.norms.append((weight.target, variance.target, eps, layout.offset))
        return layout
    if name == "getitem":
        return layout if node.args[1] == 0 else None
    if name in CHANNELWISE_UNARY:  # a tensor second argument (pow(x, y)) is not channelwise
        unary = len(node.all_input_nodes) == 1 and shape_of(node) is not None and len(shape_of(node)) == rank
        return layout if unary else None
    pooling = _POOLING.match(name)
    if pooling:
        return layout if layout.dim < rank - int(pooling.group(3)) else None
    upsampling = _UPSAMPLING.match(name)
    if upsampling:
        return layout if layout.dim < rank - int(upsampling.group(2)) else None
    if name in ("pad", "constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "replication_pad1d",
                "replication_pad2d"):
        return None if pads_dim(list(node.args[1]), layout.dim, rank) else layout
    if name in _SOFTMAX:
        return None if node.args[1] % rank == layout.dim else layout
    if name == "permute":
        return permuted(layout, list(node.args[1]), rank)
    if name == "transpose":
        return transposed(layout, node.args[1], node.args[2], rank)
    if name == "t" and rank == 2:
        return transposed(layout, 0, 1, rank)
    if name == "select":
        dim = node.args[1] % rank
        return None if dim == layout.dim else replace(layout, dim=layout.dim - (dim < layout.dim))
    if name in _REDUCTIONS:
        return _reduced(node, layout, rank)
    if name in _RESHAPES:
        return _reshaped(node, name, track, groups, shape)
    return None


def _visit_layer(node: fx.Node, name: str, tracks: dict, groups: _Groups) -> None:
    source, weight = node.args[0], node.args[1]
    bias = node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    conv_groups = node.args[6] if name != "linear" and len(node.args) > 6 else 1  # the same place in both convs
    transposed = name.startswith("conv_transpose")
    input_tracks = tracks.get(source, []) if isinstance(source, fx.Node) else []
    if _depthwise(node, name, conv_groups):
        _visit_depthwise(node, input_tracks, tracks, groups)
        return
    owns_weight = isinstance(weight, fx.Node) and weight.op == "get_attr" and conv_groups == 1
    for input_track in input_tracks:
        layout = input_track.layout
        # A conv reads channels on dim 1; a linear on its last dim, possibly as flattened blocks.
        reads_channels = layout.dim == (len(shape_of(source)) - 1 if name == "linear" else 1)
        if owns_weight and reads_channels and (name == "linear" or layout.plain):
            groups.get(input_track.group).slices.append(
                Slice(weight.target, int(not transposed), layout.block, layout.outer, layout.offset, layout.span))
        else:
            groups.freeze(input_track.group, f"{name} at {node.name} cannot be resized")
    if not owns_weight:
        return
    out_shape = shape_of(node)
    index = groups.new(out_shape[1] if name != "linear" else out_shape[-1])
    group = groups.get(index)
    producer = Slice(weight.target, int(transposed))
    group.producers.append(producer)
    group.slices.append(producer)
    if isinstance(bias, fx.Node):
        if bias.op == "get_attr":
            group.slices.append(Slice(bias.target, 0))
        else:
            group.frozen_because.append(f"computed bias at {node.name}")
    tracks[node] = [_Track(index, Layout(1 if name != "linear" else len(out_shape) - 1))]


def _visit_recurrent(node: fx.Node, name: str, tracks: dict, groups: _Groups) -> None:
    """An LSTM/GRU/RNN op: its input's channels are columns of the first layer's `weight_ih`, and its hidden units
    are a group of their own, carried by its outputs."""
    from compression.prune.recurrent_channels import recurrent_layer  # it builds this module's groups

    layer = recurrent_layer(node)
    source = node.args[0]
    for input_node in node.all_input_nodes:
        for track in tracks.get(input_node, []):
            layout = track.layout
            if layer is not None and input_node is source and layout.dim == len(shape_of(source)) - 1:
                groups.get(track.group).slices += [
                    Slice(weight, 1, layout.block, layout.outer, layout.offset, layout.span)
                    for weight in layer.input_columns]
            else:
                groups.freeze(track.group, f"{name} at {node.name} cannot be resized")
    if layer is None:
        return
    index = groups.new(layer.group.size)
    groups.groups[index] = layer.group
    tracks[node] = [_Track(index, layout, piece=piece) for piece, layout in enumerate(layer.outputs)]


def _depthwise(node: fx.Node, name: str, conv_groups) -> bool:
    """A conv with one filter per channel (MobileNet's, EfficientNet's, ConvNeXt's 7x7, ShuffleNet's): channel c
    of its output is computed from channel c of its input alone, so it carries channels like a BatchNorm does."""
    if not name.startswith("conv") or name.startswith("conv_transpose") or not isinstance(conv_groups, int):
        return False
    weight, source = _stored_weight(node.args[1]), node.args[0]
    if weight is None or not isinstance(source, fx.Node):
        return False
    channels = shape_of(source)[1] if shape_of(source) else None
    out_shape = shape_of(node)
    return conv_groups > 1 and channels == conv_groups and out_shape is not None and out_shape[1] == channels


def _stored_weight(weight) -> fx.Node | None:
    """The parameter a conv's weight is, through squeezes and unsqueezes of later dimensions (Mamba's slow path
    passes `conv1d.weight` squeezed to [C, K] and unsqueezed back): its dim 0 is the conv's output channels."""
    while (isinstance(weight, fx.Node) and weight.op == "call_function" and op_name(weight) in ("squeeze", "unsqueeze")
           and len(weight.args) == 2 and isinstance(weight.args[1], int) and weight.args[1] >= 1):
        weight = weight.args[0]
    return weight if isinstance(weight, fx.Node) and weight.op == "get_attr" else None


def _visit_depthwise(node: fx.Node, input_tracks: list[_Track], tracks: dict, groups: _Groups) -> None:
    """Each group the input carries (side by side after a concat) keeps its place in the output; the filters and
    bias entries of its channels go with them, and the conv's group count drops by every channel removed."""
    weight, bias = _stored_weight(node.args[1]), node.args[2] if len(node.args) > 2 else node.kwargs.get("bias")
    passed = []
    for track in input_tracks:
        layout = track.layout
        if layout.dim != 1 or not layout.plain:
            groups.freeze(track.group, f"depthwise conv at {node.name} reads channels it cannot place")
            continue
        group = groups.get(track.group)
        group.slices.append(Slice(weight.target, 0, offset=layout.offset, span=layout.span))
        if isinstance(bias, fx.Node):
            if bias.op == "get_attr":
                group.slices.append(Slice(bias.target, 0, offset=layout.offset, span=layout.span))
            else:
                group.frozen_because.append(f"computed bias at {node.name}")
        group.conv_groups.append(GroupsLiteral(node, 6))
        passed.append(track)
    if passed:
        tracks[node] = passed


def _join(node: fx.Node, parts: list[list[_Track]], groups: _Groups) -> list[_Track] | None:
    """Tensors that must carry the same channels at the same places (the operands of an add, the inputs of a
    concat along another dimension): their groups are merged segment by segment; None when their segments differ
    (the groups are then frozen)."""
    first = parts[0]
    if any(len(other) != len(first) for other in parts[1:]):
        for part in parts:
            for track in part:
                groups.freeze(track.group, f"{node.name} combines channels split differently")
        return None
    joined = []
    for position, track in enumerate(first):
        root = track.group
        for other in parts[1:]:
            root = groups.union(root, other[position].group, f"{op_name(node)} at {node.name}")
            if other[position].layout != track.layout:
                groups.freeze(root, f"{node.name} combines channels on different dimensions")
        joined.append(_Track(root, track.layout))
    return joined


def _visit_binary(node: fx.Node, segments: list[_Track], tracks: dict, groups: _Groups) -> None:
    other = node.args[1] if len(node.args) > 1 else None
    same_rank = len(shape_of(node) or ()) == len(shape_of(node.args[0]) or ())
    if isinstance(other, fx.Node) and other in tracks:
        joined = _join(node, [segments, tracks[other]], groups)
        if joined is not None and len(shape_of(node)) != len(shape_of(other)):
            for track in joined:
                groups.freeze(track.group, f"{node.name} combines channels on different dimensions")
        if joined is not None:
            tracks[node] = joined
        return
    if isinstance(other, fx.Node):
        other_shape, shape = shape_of(other), shape_of(node)
        for track in segments:
            dim = track.layout.dim
            # A tensor broadcast along the channel dimension (a scalar, a [N,1,H,W] map) leaves channels apart.
            broadcast = other_shape is not None and (
                len(other_shape) < len(shape) - dim or other_shape[dim - len(shape)] == 1)
            if not broadcast:
                groups.freeze(track.group, f"{node.name} combines channels with an unprunable tensor")
    if same_rank:
        tracks[node] = segments
    else:
        _freeze([node.args[0]], tracks, groups, f"{node.name} changes rank")


def _visit_cat(node: fx.Node, inputs: list[fx.Node], tracks: dict, groups: _Groups) -> None:
    """A concat along the channel dimension gives each input's groups the segment of the output's channels after
    the earlier inputs' (an untracked input, e.g. the network's own input, just takes up its slots); a concat along
    another dimension needs every input to carry the same groups at the same places."""
    parts, shape = list(node.args[0]), shape_of(node)
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if shape is None or not all(isinstance(part, fx.Node) and shape_of(part) is not None for part in parts):
        _freeze(inputs, tracks, groups, f"cat at {node.name} of unknown shapes")
        return
    dim %= len(shape)
    segments = [track for part in parts for track in tracks.get(part, [])]
    if all(track.layout.dim != dim for track in segments):
        if not all(part in tracks for part in parts):  # some inputs' channels belong to no group
            _freeze(inputs, tracks, groups, f"cat at {node.name} combines channels with an unprunable tensor")
            return
        joined = _join(node, [tracks[part] for part in parts], groups)
        if joined is not None:
            tracks[node] = joined
        return
    sizes = [shape_of(part)[dim] for part in parts]
    if not all(track.layout.dim == dim and track.layout.plain for track in segments) or \
            not all(isinstance(size, int) for size in sizes):
        _freeze(inputs, tracks, groups, f"cat at {node.name} joins channels it cannot place")
        return
    joined, offset = [], 0
    for part, size in zip(parts, sizes):
        for track in tracks.get(part, []):
            joined.append(_Track(track.group, Layout(dim, offset=offset + track.layout.offset, span=shape[dim])))
        offset += size
    tracks[node] = joined


def _visit_cut(node: fx.Node, name: str, segments: list[_Track], tracks: dict, groups: _Groups) -> None:
    """A split, chunk, slice or narrow. Along another dimension every piece keeps every group's channels where
    they were. Along the channel dimension each piece carries the groups whose channels fall in it, at their offset
    in the piece; a group the cut goes through is first split into runs (`_Groups.split`). A cut that falls inside a
    flattened block, a layout with `outer` runs, a step or a size that is not a number freezes the groups."""
    shape = shape_of(node.args[0])
    splits = name in ("split", "split_with_sizes", "chunk")
    position = 2 if splits else 1  # split(x, sizes, dim), slice(x, dim, start, end, step), narrow(x, dim, ...)
    dim = node.args[position] if len(node.args) > position else node.kwargs.get("dim", 0)
    if shape is None or not isinstance(dim, int):
        _freeze([node.args[0]], tracks, groups, f"{name} at {node.name} of unknown shape")
        return
    dim %= len(shape)
    if all(track.layout.dim != dim for track in segments):
        values = node.meta.get("val")
        if not splits:
            tracks[node] = segments
        elif isinstance(values, (list, tuple)):
            tracks[node] = [replace(track, piece=k) for k in range(len(values)) for track in segments]
        else:
            _freeze([node.args[0]], tracks, groups, f"{name} at {node.name} of unknown pieces")
        return
    cut = _cut_pieces(node, name, shape, dim)
    if cut is None:
        _freeze([node.args[0]], tracks, groups, f"{name} at {node.name} cuts the channels with a step or sizes "
                                                f"it cannot follow")
        return
    sizes, kept = cut
    bounds = [sum(sizes[:k]) for k in range(len(sizes) + 1)]  # entries along `dim` where the pieces start
    across = [track for track in segments if track.layout.dim == dim]
    if any(track.layout.outer != 1 or any(bound % track.layout.block for bound in bounds) for track in across):
        _freeze([node.args[0]], tracks, groups, f"{name} at {node.name} cuts inside a flattened channel")
        return
    straddling = next((track for track in across if _inside(track, bounds, groups)), None)
    while straddling is not None:
        groups.split(straddling.group, _inside(straddling, bounds, groups), tracks)
        segments = tracks[node.args[0]]
        straddling = next((track for track in segments if track.layout.dim == dim and
                           _inside(track, bounds, groups)), None)
    pieces: list[list[_Track]] = [[] for _ in sizes]
    for track in segments:
        if track.layout.dim != dim:
            for piece in pieces:
                piece.append(track)
            continue
        layout, size = track.layout, groups.get(track.group).size
        start = layout.offset * layout.block
        k = max(k for k in range(len(sizes)) if bounds[k] <= start)
        offset, span = layout.offset - bounds[k] // layout.block, sizes[k] // layout.block
        pieces[k].append(replace(track, layout=replace(layout, offset=offset, span=0 if (offset, span) == (
            0, size) else span)))
        groups.get(track.group).cuts.append(CutLiteral(node, dim, tuple(sizes), k, layout.block))
    if kept is None:  # a split: the list of pieces, taken apart by getitem
        tracks[node] = [replace(track, piece=k) for k, piece in enumerate(pieces) for track in piece]
    elif pieces[kept]:
        tracks[node] = pieces[kept]


def _inside(track: _Track, bounds: list[int], groups: _Groups) -> list[int]:
    """The cuts (entry `bounds` of the pieces) that fall inside the track's group, counted in its channels."""
    layout, size = track.layout, groups.get(track.group).size
    return [bound // layout.block - layout.offset for bound in bounds
            if layout.offset < bound // layout.block < layout.offset + size]


def _cut_pieces(node: fx.Node, name: str, shape: tuple, dim: int) -> tuple[list[int], int | None] | None:
    """(sizes of the pieces along `dim`, the piece a slice or narrow keeps or None for a split), or None where a
    size is not a number or a slice has a step."""
    def arg(position, keyword, default):
        return node.args[position] if len(node.args) > position else node.kwargs.get(keyword, default)

    extent = shape[dim]
    if name in ("split", "split_with_sizes", "chunk"):
        values = node.meta.get("val")
        if not isinstance(values, (list, tuple)):
            return None
        sizes, kept = [value.shape[dim] for value in values], None
    elif not isinstance(extent, int):
        return None
    elif name == "narrow":
        start, length = arg(2, "start", None), arg(3, "length", None)
        if not (isinstance(start, int) and isinstance(length, int)):
            return None
        start += extent if start < 0 else 0
        sizes, kept = [start, length, extent - start - length], 1
    else:
        start, end, step = arg(2, "start", None), arg(3, "end", None), arg(4, "step", 1)
        if step != 1 or not all(isinstance(v, int) for v in (start, end) if v is not None):
            return None
        start, end, _ = slice(start, end).indices(extent)
        end = max(start, end)
        sizes, kept = [start, end - start, extent - end], 1
    if not all(isinstance(size, int) for size in sizes):
        return None
    return sizes, kept


def _shifted(piece, start: int, size: int):
    """A Slice or Layout of a group's channels, for the run of them that starts at channel `start`."""
    return replace(piece, offset=piece.offset + start, span=piece.span or size)


def _reduced(node: fx.Node, layout: Layout, rank: int) -> Layout | None:
    dims = node.args[1] if len(node.args) > 1 else None
    keepdim = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    if not dims or not layout.plain:
        return None
    reduced = {d % rank for d in dims}
    if layout.dim in reduced:
        return None
    return replace(layout, dim=layout.dim if keepdim else layout.dim - sum(1 for d in reduced if d < layout.dim))


def _reshaped(node: fx.Node, name: str, track: _Track, groups: _Groups, source_shape) -> Layout | None:
    """A reshape that keeps the channels together in one dimension; literal sizes spelling them are recorded so
    that pruning can rewrite them (a -1 needs nothing)."""
    shape = shape_of(node)
    group = groups.get(track.group)
    if source_shape is None or shape is None:
        return None
    layout = regroup(source_shape, shape, track.layout, group.size)
    if layout is None:
        return None
    if name in _LITERAL_SHAPES:
        sizes = node.args[1]
        if isinstance(sizes[layout.dim], int) and sizes[layout.dim] != -1:
            group.reshapes.append(SizeLiteral(node, layout.dim, layout.block * layout.outer))
    return layout


def _without_shared_slices(groups: list[ChannelGroup]) -> list[ChannelGroup]:
    """A tensor dimension claimed by two groups (a weight shared by two layers) cannot follow both: freeze them.
    Groups in side-by-side segments of one dimension (the reader of a concat) claim different indices and stay."""
    claims: dict[tuple[str, int], list[tuple[ChannelGroup, Slice]]] = {}
    for group in groups:
        for piece in group.slices:
            claims.setdefault((piece.name, piece.dim), []).append((group, piece))
    for (name, dim), claimants in claims.items():
        if len({id(group) for group, _ in claimants}) > 1 and not _disjoint(claimants):
            for group, _ in claimants:
                group.frozen_because.append(f"{name} dim {dim} is shared between channel groups")
    return groups


def _disjoint(claimants: list[tuple[ChannelGroup, Slice]]) -> bool:
    """Whether different groups' segments of one tensor dimension lie in the same runs without overlapping."""
    runs = {(piece.span or group.size, piece.block, piece.outer) for group, piece in claimants}
    if len(runs) != 1:
        return False
    taken = {}
    for group, piece in claimants:
        for slot in range(piece.offset, piece.offset + group.size):
            if taken.setdefault(slot, id(group)) != id(group):
                return False
    return True
