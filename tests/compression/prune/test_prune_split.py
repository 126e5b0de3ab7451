"""Structured pruning through split, chunk, slice and narrow along the channel dimension: each piece carries the
channels of the groups that fall in it; a group the cut goes through becomes one group per run, and runs that meet
in an elementwise op (the two halves of a gated linear unit) are pruned with the same indices, so the fused producer
loses row j of both halves. Models whose removed channels were exactly zero must compute the same outputs."""

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.io import export_model
from compression.prune.channel_groups import find_channel_groups
from compression.prune.structured import channel_scores, plan_structured, prune_channels
from tests.compression.prune.conftest import exported
from tests.compression.prune.test_prune_concat import conv_bn, groups_by_layers, prune_zeroed_and_compare


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class GatedMLP(nn.Module):
    """A transformer GLU MLP with a fused gate/up projection: `a, b = proj(x).chunk(2, -1); out(gelu(a) * b)`."""

    def __init__(self, hidden: int = 6):
        super().__init__()
        self.inp = nn.Linear(6, 8)
        self.proj = nn.Linear(8, 2 * hidden)
        self.out = nn.Linear(hidden, 4)

    def forward(self, x):
        gate, up = self.proj(self.inp(x)).chunk(2, dim=-1)
        return self.out(F.gelu(gate) * up)


class GatedCNN(nn.Module):
    """WaveNet-style gate `tanh(a) * sigmoid(b)` after `bn(conv(x)).chunk(2, 1)`, with a residual around it."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.gate = nn.Sequential(nn.Conv2d(8, 2 * 8, 3, padding=1), nn.BatchNorm2d(2 * 8))
        self.mix = nn.Conv2d(8, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = self.stem(x)
        a, b = self.gate(x).chunk(2, 1)
        return self.head(x + self.mix(torch.tanh(a) * torch.sigmoid(b))).mean((2, 3))


def test_the_gated_mlp_halves_are_one_group_at_two_offsets_of_the_fused_producer():
    groups = groups_by_layers(exported(GatedMLP(), (torch.randn(2, 3, 6),)))
    gated = groups[("proj.weight", "proj.weight")]
    assert gated.prunable and gated.size == 6
    assert {(p.name, p.dim, p.offset, p.span) for p in gated.slices} == {
        ("proj.weight", 0, 0, 12), ("proj.weight", 0, 6, 12), ("proj.bias", 0, 0, 12), ("proj.bias", 0, 6, 12),
        ("out.weight", 1, 0, 0)}


def test_gated_mlp_zeroed_channels_leave_outputs_unchanged_and_both_halves_lose_their_rows():
    torch.manual_seed(0)
    model = GatedMLP()
    proj = model.proj.weight.detach().clone()
    before = parameter_count(model)
    smaller = prune_zeroed_and_compare(model, (torch.randn(2, 3, 6),), torch.randn(5, 3, 6),
                                       {"inp.weight", "proj.weight"})
    # inp 8 -> 4 units, each half of proj 6 -> 3 rows, out 6 -> 3 columns
    assert before - parameter_count(smaller) == (4 * 6 + 4) + (12 * 8 + 12 - 6 * 4 - 6) + 4 * 3
    kept_rows = [1, 3, 5, 7, 9, 11]  # the odd rows of the gate half and of the up half
    assert torch.equal(smaller.get_parameter("proj.weight"), proj[kept_rows][:, [1, 3, 5, 7]])
    assert smaller.get_parameter("out.weight").shape == (4, 3)


def test_a_merged_glu_channel_is_scored_by_both_of_its_halves():
    graph_module = exported(GatedMLP(hidden=4), (torch.randn(2, 3, 6),))
    with torch.no_grad():
        weight = graph_module.get_parameter("proj.weight")
        weight.fill_(1.0)
        weight[0] = 0.0  # channel 0's gate row is dead, its up row (row 4) is not
        weight[5] = 3.0  # channel 1's up row is strong
    group = groups_by_layers(graph_module)[("proj.weight", "proj.weight")]
    scores = channel_scores(graph_module, group, "l1")
    # each half's norms divided by their mean, summed: gate half (0, 1, 1, 1) / 0.75, up half (1, 3, 1, 1) / 1.5
    torch.testing.assert_close(scores, torch.tensor([0, 4 / 3, 4 / 3, 4 / 3]) + torch.tensor([2, 6, 2, 2]) / 3)


def test_gated_cnn_with_a_residual_zeroed_channels_leave_outputs_unchanged():
    model = GatedCNN()
    before = parameter_count(model)
    smaller = prune_zeroed_and_compare(model, (torch.randn(2, 3, 6, 6),), torch.randn(4, 3, 6, 6),
                                       {"stem.0.weight", "mix.weight", "gate.0.weight"})
    assert smaller.get_parameter("gate.0.weight").shape == (8, 4, 3, 3)  # both halves 8 -> 4, input 8 -> 4
    assert smaller.get_buffer("gate.1.running_var").shape == (8,)
    assert smaller.get_parameter("mix.weight").shape == (4, 4, 1, 1)
    assert smaller.get_parameter("head.weight").shape == (4, 4, 1, 1)
    removed = (4 * 3 * 9 + 4 + 4 * 2) + (16 * 8 * 9 + 16 - 8 * 4 * 9 - 8 + 8 * 2) + (64 + 8 - 16 - 4) + 4 * 4
    assert before - parameter_count(smaller) == removed


class UnequalSplit(nn.Module):
    """`torch.split(x, [2, 4], 1)` into two branches that are added (or concatenated) back together."""

    def __init__(self, join: str):
        super().__init__()
        self.join = join
        self.c = nn.Conv2d(3, 6, 3, padding=1)
        self.branch = nn.Conv2d(2, 4, 3, padding=1)
        self.head = nn.Conv2d(4 if join == "add" else 8, 3, 1)

    def forward(self, x):
        narrow, wide = torch.split(self.c(x), [2, 4], dim=1)
        left, right = self.branch(narrow), F.relu(wide)
        return self.head(left + right if self.join == "add" else torch.cat([left, right], 1)).mean((2, 3))


@pytest.mark.parametrize("join", ["add", "cat"])
def test_unequal_split_into_two_branches_zeroed_channels_leave_outputs_unchanged(join):
    graph_module = exported(UnequalSplit(join), (torch.randn(2, 3, 6, 6),))
    runs = {p.offset: group for group in find_channel_groups(graph_module) for p in group.producers
            if p.name == "c.weight"}
    narrow, wide = runs[0], runs[2]  # c's channels 0-1, read by the branch conv, and 2-5
    assert (narrow.size, wide.size) == (2, 4)
    assert ("branch.weight", 1, 0, 0) in {(s.name, s.dim, s.offset, s.span) for s in narrow.slices}
    assert ("c.weight", 0, 2, 6) in {(s.name, s.dim, s.offset, s.span) for s in wide.slices}
    assert ("branch.weight" in {p.name for p in wide.producers}) == (join == "add")  # the add merges them
    smaller = prune_zeroed_and_compare(UnequalSplit(join), (torch.randn(2, 3, 6, 6),), torch.randn(4, 3, 6, 6),
                                       {"c.weight", "branch.weight"})
    assert wide.prunable and smaller.get_parameter("c.weight").shape == (1 + 2, 3, 3, 3)
    assert smaller.get_parameter("branch.weight").shape == (2, 1, 3, 3)
    assert smaller.get_parameter("head.weight").shape == (3, 2 if join == "add" else 4, 1, 1)


class Narrowed(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.c = nn.Conv2d(3, 8, 1)
        self.d = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        y = self.c(x)
        kept = y.narrow(1, 2, 4) if self.how == "narrow" else y[:, -6:6] if self.how == "negative" else y[:, 2:6]
        return self.d(kept).mean((2, 3))


@pytest.mark.parametrize("how", ["narrow", "slice", "negative"])
def test_a_channel_slice_keeps_the_channels_inside_and_its_bounds_follow_the_pruning(how):
    smaller = prune_zeroed_and_compare(Narrowed(how), (torch.randn(2, 3, 4, 4),), torch.randn(3, 3, 4, 4),
                                       {"c.weight"})
    # runs 0-1, 2-5 and 6-7 of c keep their odd channels 1, 3, 5, 7; d reads 3 and 5
    assert smaller.get_parameter("c.weight").shape == (4, 3, 1, 1)
    assert smaller.get_parameter("d.weight").shape == (3, 2, 1, 1)


class ChunkOfConcat(nn.Module):
    """A chunk whose cut falls between the segments of a concat: no group is split."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.d = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        gate, up = torch.cat([self.a(x), self.b(x)], 1).chunk(2, 1)
        return self.d(torch.tanh(gate) * up).mean((2, 3))


def test_a_chunk_between_concat_segments_merges_the_concatenated_groups():
    groups = groups_by_layers(exported(ChunkOfConcat(), (torch.randn(2, 3, 4, 4),)))
    assert groups[("a.weight", "b.weight")].prunable and groups[("a.weight", "b.weight")].size == 4
    smaller = prune_zeroed_and_compare(ChunkOfConcat(), (torch.randn(2, 3, 4, 4),), torch.randn(3, 3, 4, 4),
                                       {"a.weight", "b.weight"})
    assert smaller.get_parameter("d.weight").shape == (3, 2, 1, 1)


class FlattenedChunk(nn.Module):
    """A chunk of a flattened (N, C * H * W) map between whole channels: each linear reads blocks of H * W."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 1)
        self.left = nn.Linear(8, 3)
        self.right = nn.Linear(8, 3)

    def forward(self, x):
        left, right = self.c(x).flatten(1).chunk(2, 1)
        return self.left(left) + self.right(right)


def test_a_chunk_of_a_flattened_map_between_channels_prunes_each_half():
    smaller = prune_zeroed_and_compare(FlattenedChunk(), (torch.randn(2, 3, 2, 2),), torch.randn(3, 3, 2, 2),
                                       {"c.weight"})
    assert smaller.get_parameter("c.weight").shape == (2, 3, 1, 1)  # channel 1 of each half of c
    assert smaller.get_parameter("left.weight").shape == smaller.get_parameter("right.weight").shape == (3, 4)


class OtherDimensionSplit(nn.Module):
    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 1)
        self.d = nn.Conv2d(4, 3, 1)

    def forward(self, x):
        top, bottom = self.c(x).split(2, dim=2)  # along the height: every piece keeps every channel
        return self.d(torch.cat([bottom[:, :, :, ::2], top[:, :, :, 1::2]], 2)).mean((2, 3))


def test_a_split_along_another_dimension_keeps_the_channels_prunable():
    assert groups_by_layers(exported(OtherDimensionSplit(), (torch.randn(2, 3, 4, 4),)))[("c.weight",)].prunable
    smaller = prune_zeroed_and_compare(OtherDimensionSplit(), (torch.randn(2, 3, 4, 4),), torch.randn(3, 3, 4, 4),
                                       {"c.weight"})
    assert smaller.get_parameter("d.weight").shape == (3, 2, 1, 1)


class Unfollowable(nn.Module):
    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.c = nn.Conv2d(3, 4, 1)
        self.d = nn.Conv2d(2, 3, 1)
        self.e = nn.Linear(6, 3)

    def forward(self, x):
        y = self.c(x)
        if self.how == "step":
            return self.d(y[:, ::2]).mean((2, 3))
        # 4 channels of 2 x 2 pixels flattened: a cut after 6 entries falls inside channel 1's block
        first, _ = torch.split(y.flatten(1), [6, 10], dim=1)
        return self.e(first)


@pytest.mark.parametrize("how, reason", [("step", "slice at .* cuts the channels with a step"),
                                         ("block", "split_with_sizes at .* cuts inside a flattened channel")])
def test_a_cut_the_layout_cannot_express_freezes_the_group_and_prunes_nothing_of_it(how, reason):
    graph_module = exported(Unfollowable(how), (torch.randn(2, 3, 2, 2),))
    example = torch.randn(3, 3, 2, 2)
    expected = graph_module(example)
    group = groups_by_layers(graph_module)[("c.weight",)]
    assert not group.prunable and any(re.search(reason, why) for why in group.frozen_because)
    plans, _ = plan_structured(graph_module, 0.5)
    assert all("c.weight" not in [p.name for p in plan.group.producers] for plan in plans)
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, (torch.randn(2, 3, 2, 2),)).module()
    assert smaller.get_parameter("c.weight").shape == (4, 3, 1, 1)
    torch.testing.assert_close(smaller(example), expected)
