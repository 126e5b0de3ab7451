"""Where a channel group's channels sit in a tensor, and how shape-changing ops move them.

A tracked tensor holds the group's C channels along one dimension `dim`, laid out as `outer` repeats of C channels of
`block` consecutive entries each: index (o, c, i) of that dimension is o * C * block + c * block + i. A plain conv
output has outer = block = 1; `x.flatten(1)` of an (N, C, H, W) map gives block = H * W; the torchcrepe-style
`x.permute(0, 2, 1, 3).reshape(N, T * C)` gives outer = T. A consumer linear then owns, per kept channel, `outer`
runs of `block` columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import fx


@dataclass(frozen=True)
class Layout:
    dim: int  # the dimension of the tensor that indexes the group's channels
    block: int = 1
    outer: int = 1

    @property
    def plain(self) -> bool:
        return self.block == 1 and self.outer == 1


def shape_of(node) -> tuple | None:
    """The node's shape with symbolic sizes (the dynamic batch) as strings, so they compare without guards."""
    value = node.meta.get("val") if isinstance(node, fx.Node) else None
    if isinstance(value, torch.Tensor):
        return tuple(int(s) if isinstance(s, int) else str(s) for s in value.shape)
    return None


def channel_indices(keep: torch.Tensor, size: int, block: int, outer: int) -> torch.Tensor:
    """Indices along a dimension of outer * size * block entries that belong to the kept channels."""
    per_channel = (keep[:, None] * block + torch.arange(block)).flatten()
    return (torch.arange(outer)[:, None] * size * block + per_channel).flatten()


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
    before = math.prod(rest_source[:d]) * layout.outer  # elements outside the channels, outer side
    after = layout.block * math.prod(rest_source[d + 1:])  # inner side
    for e, extent in enumerate(rest_target):
        left, right = math.prod(rest_target[:e]), math.prod(rest_target[e + 1:])
        if before % left == 0 and after % right == 0 and extent == before // left * size * (after // right):
            return Layout(common + e, after // right, before // left)
        if left > before:
            break
    return None


def permuted(layout: Layout, order: list[int], rank: int) -> Layout:
    return Layout([d % rank for d in order].index(layout.dim), layout.block, layout.outer)


def transposed(layout: Layout, a: int, b: int, rank: int) -> Layout:
    a, b = a % rank, b % rank
    dim = b if layout.dim == a else a if layout.dim == b else layout.dim
    return Layout(dim, layout.block, layout.outer)


def pads_dim(pad: list, dim: int, rank: int) -> bool:
    """Whether a pad list (last dimension first, (left, right) pairs) pads dimension `dim`."""
    j = rank - 1 - dim
    return 2 * j + 1 < len(pad) and (pad[2 * j] != 0 or pad[2 * j + 1] != 0)
