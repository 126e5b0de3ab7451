"""Structured pruning that really removes conv channels, linear units and attention heads from an exported graph.

`find_channel_groups` says which parameter dimensions index the same channels and `find_head_groups` which rows
and columns make up each attention head; this module ranks each group's channels (or heads) by the L1/L2 norm of
the weights that produce them, keeps the strongest, and rebuilds every parameter and buffer of the group smaller
(producer rows, BatchNorm statistics, the consumer's input columns, flattened blocks), rewriting literal sizes of
`view`/`reshape` nodes and the sizes of split/chunk nodes (which become `split_with_sizes`) and the bounds of
slice/narrow nodes that cut the channels. A tensor that several groups share side by side (the reader of a concat,
a fused GLU producer whose halves are runs of one or two groups) is cut once, by the union of every group's removed
indices, so that no group's offsets move under another's. The result is
re-exported by the caller, which refreshes the graph's shape metadata and yields a genuinely smaller `.pt2`.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

import torch
from torch import fx, nn

from compression.prune.attention_heads import find_head_groups
from compression.prune.channel_groups import ChannelGroup, CutLiteral, Slice, find_channel_groups
from compression.prune.channel_layout import channel_indices

aten = torch.ops.aten


@dataclass
class GroupPlan:
    group: ChannelGroup
    keep: torch.Tensor  # sorted indices of the channels that stay

    def describe(self) -> dict:
        # a fused GLU weight produces both halves of its group's channels: listed once
        return {"layers": list(dict.fromkeys(p.name for p in self.group.producers)), "unit": self.group.unit,
                "channels": self.group.size, "kept": int(self.keep.numel())}


def channel_scores(model: nn.Module, group: ChannelGroup, norm: str) -> torch.Tensor:
    """Per-channel importance: the norm of each producer's output-channel weights, each producer's scores divided
    by their mean so that layers of different scale (a shortcut projection beside a 3x3 conv) weigh alike, times
    the gain |gamma| / sqrt(var + eps) of every BatchNorm on the channels (relative to its mean): a channel with
    small weights that a BatchNorm scales up still matters (Liu et al. 2017, network slimming)."""
    tiny = torch.finfo(torch.float32).tiny
    total = torch.zeros(group.size)
    for producer in group.producers:
        # Channel c owns `block` consecutive rows (one row, or a head's rows) of the producer's dimension.
        weight = _channel_rows(_tensor(model, producer.name).detach().float(), producer, group.size)
        score = weight.abs().sum(1) if norm == "l1" else weight.pow(2).sum(1).sqrt()
        total += score / score.mean().clamp_min(tiny)
    for weight_name, variance_name, eps, offset in group.norms:
        gamma, variance = (_tensor(model, name).detach().float()[offset:offset + group.size]
                           for name in (weight_name, variance_name))
        gain = gamma.abs() / (variance + eps).sqrt()
        total *= gain / gain.mean().clamp_min(tiny)
    return total


def _channel_rows(weight: torch.Tensor, producer: Slice, size: int) -> torch.Tensor:
    """One row per group channel of everything the producer makes for it: its `block` rows (one row, or a head's
    rows), at the group's offset where the group is one run of a split producer (one half of a fused GLU weight)."""
    index = channel_indices(torch.arange(size), producer.span or size, producer.block, producer.outer,
                            producer.offset) + producer.start
    index = index.view(producer.outer, size, producer.block).transpose(0, 1).flatten()
    return weight.movedim(producer.dim, 0)[index].reshape(size, -1)


def plan_structured(model: fx.GraphModule, fraction: float, norm: str = "l2",
                    exclude: list[str] | None = None) -> tuple[list[GroupPlan], list[ChannelGroup]]:
    """Decide, for every prunable group, which channels stay: all but floor(fraction * size), at least one.

    Returns the plans and the groups left alone (with `frozen_because` saying why) for the report.
    """
    plans, skipped = [], []
    for group in _independent(find_channel_groups(model), find_head_groups(model)):
        excluded = [p.name for p in group.producers if any(fnmatch.fnmatchcase(p.name, pat) for pat in exclude or [])]
        if excluded:
            group.frozen_because.append(f"excluded {excluded}")
        removed = min(int(fraction * group.size), group.size - 1)
        if not group.prunable or removed == 0:
            skipped.append(group)
            continue
        scores = channel_scores(model, group, norm)
        keep = torch.sort(torch.topk(scores, group.size - removed, sorted=False).indices).values
        plans.append(GroupPlan(group, keep))
    return plans, skipped


def nothing_to_prune(fraction: float, skipped: list[ChannelGroup]) -> str:
    """Why `plan_structured` planned nothing: each kept group's reason, and for groups too small to lose one at
    this fraction (attention of 3 heads after an earlier prune; a decoder's 2 key/value head groups at 0.25), the
    fraction that removes one."""
    reasons = sorted({reason for group in skipped for reason in group.frozen_because})
    small = [group for group in skipped if not group.frozen_because and group.size > 1]
    if small:
        sizes = sorted({f"{group.size} {group.unit}" for group in small})
        enough = math.ceil(100 / min(group.size for group in small)) / 100  # removes one of the smallest
        reasons.append(f"groups of {', '.join(sizes)} lose none at this sparsity: raise it to at least {enough}")
    single = sorted({group.unit for group in skipped if not group.frozen_because and group.size == 1})
    if single:  # one head (or channel) is all the group has: no sparsity removes it
        reasons.append(f"groups with one {'/'.join(unit.removesuffix('s') for unit in single)} keep it at any "
                       "sparsity")
    return f"no channel group can be pruned at sparsity {fraction}: {reasons}"


def prune_channels(model: fx.GraphModule, plans: list[GroupPlan]) -> None:
    """Shrink every parameter/buffer named in the plans in place and fix flatten sizes in the graph."""
    removed: dict[tuple[str, int], list[torch.Tensor]] = {}
    cut_sizes: dict[fx.Node, tuple[CutLiteral, list[int]]] = {}
    for plan in plans:
        gone = torch.ones(plan.group.size, dtype=torch.bool)
        gone[plan.keep] = False
        gone = gone.nonzero().flatten()
        for piece in plan.group.slices:
            removed.setdefault((piece.name, piece.dim), []).append(_indices(model, piece, plan.group.size, gone))
        for literal in plan.group.reshapes:  # a literal may count several groups' channels (after a concat)
            args = list(literal.node.args)
            sizes = list(args[literal.arg])
            sizes[literal.index] = -1 if literal.infer else sizes[literal.index] - gone.numel() * literal.per_channel
            args[literal.arg] = sizes
            literal.node.args = tuple(args)
        for cut in plan.group.cuts:  # a split may hold several groups' channels in one piece
            _, sizes = cut_sizes.setdefault(cut.node, (cut, list(cut.sizes)))
            sizes[cut.piece] -= gone.numel() * cut.per_channel
        for literal in plan.group.conv_groups:  # a depthwise conv may carry several groups' channels
            args = list(literal.node.args)
            args[literal.index] -= gone.numel()
            literal.node.args = tuple(args)
    for cut, sizes in cut_sizes.values():
        _rewrite_cut(cut, sizes)
    for (name, dim), indices in removed.items():
        _shrink(model, name, dim, torch.cat(indices))
    model.graph.lint()
    model.recompile()


def _rewrite_cut(cut: CutLiteral, sizes: list[int]) -> None:
    """A split or chunk becomes a split_with_sizes of the pruned pieces; a slice or narrow keeps the middle piece."""
    node = cut.node
    if cut.node.target in (aten.slice.Tensor, aten.narrow.default):
        end = sizes[0] + sizes[1] if node.target == aten.slice.Tensor else sizes[1]
        node.args, node.kwargs = (node.args[0], cut.dim, sizes[0], end), {}
    else:
        node.target = aten.split_with_sizes.default
        node.args, node.kwargs = (node.args[0], sizes, cut.dim), {}


def _indices(model: nn.Module, piece: Slice, size: int, channels: torch.Tensor) -> torch.Tensor:
    """Indices along the piece's dimension that hold `channels` of its group."""
    span = piece.span or size
    extent = _tensor(model, piece.name).shape[piece.dim]
    if extent != (piece.extent or piece.outer * span * piece.block):
        raise ValueError(f"{piece.name} dim {piece.dim} has {extent} entries, not {piece.outer} x {span} channels "
                         f"x {piece.block}" + (f" of {piece.extent}" if piece.extent else ""))
    return channel_indices(channels, span, piece.block, piece.outer, piece.offset) + piece.start


def _shrink(model: nn.Module, name: str, dim: int, removed: torch.Tensor) -> None:
    tensor = _tensor(model, name)
    keep = torch.ones(tensor.shape[dim], dtype=torch.bool)
    keep[removed] = False
    smaller = tensor.detach().index_select(dim, keep.nonzero().flatten().to(tensor.device)).clone()
    module_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(module_name) if module_name else model
    if attr in owner._parameters:
        owner._parameters[attr] = nn.Parameter(smaller, requires_grad=tensor.requires_grad)
    else:
        owner._buffers[attr] = smaller


def _independent(channel_groups: list[ChannelGroup], head_groups: list[ChannelGroup]) -> list[ChannelGroup]:
    """Channel groups and head groups; a head group touching a tensor dimension that a prunable channel group
    also resizes is frozen (the two cannot both slice it)."""
    claimed = {(piece.name, piece.dim) for group in channel_groups if group.prunable for piece in group.slices}
    for group in head_groups:
        if any((piece.name, piece.dim) in claimed for piece in group.slices):
            group.frozen_because.append("attention heads share weights with a channel group")
    return channel_groups + head_groups


def _tensor(model: nn.Module, name: str) -> torch.Tensor:
    module_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(module_name) if module_name else model
    return getattr(owner, attr)
