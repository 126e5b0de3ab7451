"""Where a channel group's channels sit in a tensor, and how shape-changing ops move them.

A tracked tensor holds the group's C channels along one dimension `dim`, laid out as `outer` repeats of C channels of
`block` consecutive entries each: index (o, c, i) of that dimension is o * C * block + c * block + i. A plain conv
output has outer = block = 1; `x.flatten(1)` of an (N, C, H, W) map gives block = H * W; the torchcrepe-style
`x.permute(0, 2, 1, 3).reshape(N, T * C)` gives outer = T. A consumer linear then owns, per kept channel, `outer`
runs of `block` columns.

After a concat along the channel dimension the group's channels are one segment of a wider run: `span` channel
slots, the group's starting at `offset` (index o * span * block + (offset + c) * block + i). span 0 means the run
is the group's own C channels.

A projection's rows may also be consecutive runs of different sizes, C channels in each (Phi-3's grouped-query
`qkv_proj`: [q | k | v] with H / KV query heads per key/value head): `runs` holds the entries per channel of each
run, and only cuts along `dim` that keep whole runs apart understand it (`block` and `outer` are unused).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import fx


@dataclass(frozen=True)
class Layout:
    dim: int  # the dimension of the tensor that indexes the group's channels
    block: int = 1
    outer: int = 1
    offset: int = 0
    span: int = 0  # 0: the group's size
    runs: tuple[int, ...] = ()  # entries per channel of each run, where the runs differ

    @property
    def plain(self) -> bool:
        return self.block == 1 and self.outer == 1


def shape_of(node) -> tuple | None:
    """The node's shape with symbolic sizes (the dynamic batch) as strings, so they compare without guards."""
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    if isinstance(value, torch.Tensor):
        return tuple(int(s) if isinstance(s, int) else str(s) for s in value.shape)
    return None


def channel_indices(channels: torch.Tensor, span: int, block: int, outer: int, offset: int = 0) -> torch.Tensor:
    """Indices along a dimension of outer * span * block entries that belong to `channels` of the segment that
    starts at channel slot `offset`."""
    per_channel = ((channels[:, None] + offset) * block + torch.arange(block)).flatten()
    return (torch.arange(outer)[:, None] * span * block + per_channel).flatten()


def regroup(source: tuple, target: tuple, layout: Layout, size: int) -> Layout | None:
    """The layout after a reshape (view, flatten, squeeze, unsqueeze) from `source` to `target` shape, or None
    when the reshape splits the channels or mixes them into another dimension.

    Leading dimensions the reshape leaves alone (the batch, maybe symbolic) are skipped; the rest must be static.
    """
    common = 0
    while common < min(len(source), len(target)) and source[common] == target[common]:
        common += 1
    if layout.dim < common:
        return layout
    rest_source, rest_target = source[common:], target[common:]
    if not all(isinstance(s, int) for s in (*rest_source, *rest_target)):
        return None
    d = layout.dim - common
    size = layout.span or size
    before = math.prod(rest_source[:d]) * layout.outer  # elements outside the channels, outer side
    after = layout.block * math.prod(rest_source[d + 1:])  # inner side
    for e, extent in enumerate(rest_target):
        left, right = math.prod(rest_target[:e]), math.prod(rest_target[e + 1:])
        if before % left == 0 and after % right == 0 and extent == before // left * size * (after // right):
            return Layout(common + e, after // right, before // left, layout.offset, layout.span)
        if left > before:
            break
    return None


def permuted(layout: Layout, order: list[int], rank: int) -> Layout:
    return replace(layout, dim=[d % rank for d in order].index(layout.dim))


def transposed(layout: Layout, a: int, b: int, rank: int) -> Layout:
    a, b = a % rank, b % rank
    dim = b if layout.dim == a else a if layout.dim == b else layout.dim
    return replace(layout, dim=dim)


def pads_dim(pad: list, dim: int, rank: int) -> bool:
    """Whether a pad list (last dimension first, (left, right) pairs) pads dimension `dim`."""
    j = rank - 1 - dim
    return 2 * j + 1 < len(pad) and (pad[2 * j] != 0 or pad[2 * j + 1] != 0)
