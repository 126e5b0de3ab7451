"""Structured pruning through concatenations: each input of a channel-dim concat owns a segment of the output's
channels, so its channels are removed from the concat's readers (the next conv's input columns, a BatchNorm on the
concat) at the segment's offset. Models whose removed channels were exactly zero must compute the same outputs."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.io import export_model
from compression.prune.channel_groups import find_channel_groups
from compression.prune.channel_layout import channel_indices
from compression.prune.structured import plan_structured, prune_channels
from tests.compression.prune.conftest import exported, randomize_batch_norm


def conv_bn(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.BatchNorm2d(cout), nn.ReLU())


class DenseBlockNet(nn.Module):
    """DenseNet: every layer reads the concatenation of all earlier outputs (BN-ReLU-conv after the concat)."""

    def __init__(self, growth: int = 4):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(6 + i * growth), nn.ReLU(), nn.Conv2d(6 + i * growth, growth, 3, padding=1))
            for i in range(2))
        self.transition = nn.Sequential(nn.BatchNorm2d(6 + 2 * growth), nn.ReLU(), nn.Conv2d(6 + 2 * growth, 8, 1))
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        features = [self.stem(x)]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.head(self.transition(torch.cat(features, 1)).mean((2, 3)))


class InceptionNet(nn.Module):
    """Parallel branches concatenated, one of them the pooled network input (channels no group owns)."""

    def __init__(self):
        super().__init__()
        self.branch1 = conv_bn(3, 4, 1)
        self.branch3 = nn.Sequential(conv_bn(3, 6, 1), conv_bn(6, 4))
        self.branch5 = nn.Sequential(conv_bn(3, 2, 1), conv_bn(2, 4, 5))
        self.mix = conv_bn(3 + 12, 8, 1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        pooled = F.avg_pool2d(x, 3, 1, 1)
        mixed = torch.cat([self.branch1(x), pooled, self.branch3(x), self.branch5(x)], 1)
        return self.head(self.mix(mixed).mean((2, 3)))


class SkipNet(nn.Module):
    """UNet: decoder features brought up by a transposed conv and by bilinear upsampling, concatenated, then
    concatenated with the encoder's skip (a concat of a concat); then a concat along the width, which leaves the
    channels where they are, and a dense per-pixel output."""

    def __init__(self):
        super().__init__()
        self.enc = conv_bn(3, 6)
        self.bottom = conv_bn(6, 8)
        self.up = nn.ConvTranspose2d(8, 4, 2, 2)
        self.reduce = nn.Conv2d(8, 4, 1)
        self.dec = conv_bn(4 + 4 + 6, 6)
        self.out = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        skip = self.enc(x)
        bottom = self.bottom(F.max_pool2d(skip, 2))
        up = torch.cat([self.up(bottom), F.interpolate(self.reduce(bottom), scale_factor=2, mode="bilinear")], 1)
        decoded = self.dec(torch.cat([up, skip], 1))
        return self.out(torch.cat([decoded, decoded], 3))


def groups_by_layers(graph_module):
    return {tuple(sorted(p.name for p in group.producers)): group for group in find_channel_groups(graph_module)}


def zero_every_other_channel(graph_module) -> None:
    """Make the even channels of every prunable group produce exact zeros: producer rows (columns of a transposed
    conv), biases and the affine parameters of every BatchNorm on them (at the group's offset where the BatchNorm
    follows a concat)."""
    with torch.no_grad():
        for group in find_channel_groups(graph_module):
            if not group.prunable:
                continue
            channels = torch.arange(0, group.size, 2)
            for piece in group.slices:
                if piece in group.producers or piece.dim == 0 and "running" not in piece.name and \
                        graph_module.get_parameter(piece.name).dim() == 1:
                    tensor = graph_module.get_parameter(piece.name)
                    index = channel_indices(channels, piece.span or group.size, piece.block, piece.outer,
                                            piece.offset)
                    tensor.index_fill_(piece.dim, index, 0)


def prune_zeroed_and_compare(model: nn.Module, example: tuple, inputs: torch.Tensor, expect_pruned: set[str]):
    torch.manual_seed(0)
    randomize_batch_norm(model)
    graph_module = exported(model, example)
    zero_every_other_channel(graph_module)
    expected = graph_module(inputs)
    parameters_before = sum(p.numel() for p in graph_module.parameters())
    plans, _ = plan_structured(graph_module, 0.5, "l1")
    pruned = {p.name for plan in plans for p in plan.group.producers}
    assert expect_pruned <= pruned
    assert all(plan.keep.tolist() == list(range(1, plan.group.size, 2)) for plan in plans)
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, example).module()
    assert sum(p.numel() for p in smaller.parameters()) < 0.7 * parameters_before
    torch.testing.assert_close(smaller(inputs), expected, rtol=1e-5, atol=1e-5)
    for batch in (1, 3):
        assert smaller(inputs[:batch]).shape == (batch, *expected.shape[1:])
    return smaller


def test_dense_block_channels_are_segments_of_the_concat_its_readers_lose():
    graph_module = exported(DenseBlockNet(), (torch.randn(2, 3, 8, 8),))
    groups = groups_by_layers(graph_module)
    assert all(group.prunable for name, group in groups.items() if name != ("head.weight",))
    resized = {(s.name, s.dim, s.offset, s.span) for s in groups[("layers.0.2.weight",)].slices}
    # layer 0's 4 channels follow the stem's 6 in both later concats (spans 10 and 14)
    assert {("layers.1.2.weight", 1, 6, 10), ("layers.1.0.weight", 0, 6, 10), ("transition.2.weight", 1, 6, 14),
            ("transition.0.running_var", 0, 6, 14)} <= resized


def test_dense_block_zeroed_channels_leave_outputs_unchanged():
    smaller = prune_zeroed_and_compare(DenseBlockNet(), (torch.randn(2, 3, 8, 8),), torch.randn(5, 3, 8, 8),
                                       {"stem.weight", "layers.0.2.weight", "layers.1.2.weight"})
    assert smaller.get_parameter("transition.2.weight").shape == (4, 3 + 2 + 2, 1, 1)
    assert smaller.get_buffer("transition.0.running_mean").shape == (7,)


def test_inception_branches_zeroed_channels_leave_outputs_unchanged():
    smaller = prune_zeroed_and_compare(InceptionNet(), (torch.randn(2, 3, 8, 8),), torch.randn(5, 3, 8, 8),
                                       {"branch1.0.weight", "branch3.1.0.weight", "branch5.1.0.weight"})
    assert smaller.get_parameter("mix.0.weight").shape == (4, 2 + 3 + 2 + 2, 1, 1)  # the pooled input's 3 channels stay


def test_unet_skip_concat_zeroed_channels_leave_outputs_unchanged():
    graph_module = exported(SkipNet(), (torch.randn(2, 3, 8, 8),))
    groups = groups_by_layers(graph_module)
    assert all(groups[(name,)].prunable for name in ("enc.0.weight", "bottom.0.weight", "up.weight", "reduce.weight"))
    resized = {(s.name, s.dim, s.offset, s.span) for s in groups[("up.weight",)].slices}
    assert resized == {("up.weight", 1, 0, 0), ("up.bias", 0, 0, 0), ("dec.0.weight", 1, 0, 14)}
    assert groups[("dec.0.weight",)].prunable
    pruned = {"enc.0.weight", "reduce.weight", "bottom.0.weight", "dec.0.weight", "up.weight"}
    smaller = prune_zeroed_and_compare(SkipNet(), (torch.randn(2, 3, 8, 8),), torch.randn(5, 3, 8, 8), pruned)
    assert smaller.get_parameter("dec.0.weight").shape == (3, 2 + 2 + 3, 3, 3)
    assert smaller.get_parameter("up.weight").shape == (4, 2, 2, 2)


class ChannelConcatOfDifferentLayouts(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        # the second input has its channels on the last dimension: the concat cannot place them
        return self.c(torch.cat([self.a(x), self.b(x).permute(0, 3, 2, 1)], 1)).mean((2, 3))


def test_a_concat_that_cannot_place_every_input_freezes_them():
    graph_module = exported(ChannelConcatOfDifferentLayouts(), (torch.randn(2, 3, 4, 4),))
    groups = groups_by_layers(graph_module)
    assert not groups[("a.weight",)].prunable and not groups[("b.weight",)].prunable


@pytest.mark.parametrize("repeat", [1, 2])
def test_a_concat_of_one_tensor_with_itself_removes_each_copy(repeat):
    class Repeated(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.c = nn.Conv2d(4 * (repeat + 1), 2, 1)
            self.head = nn.Linear(2, 3)

        def forward(self, x):
            y = self.a(x)
            return self.head(self.c(torch.cat([y] * (repeat + 1), 1)).mean((2, 3)))

    smaller = prune_zeroed_and_compare(Repeated(), (torch.randn(2, 3, 4, 4),), torch.randn(4, 3, 4, 4),
                                       {"a.weight", "c.weight"})
    assert smaller.get_parameter("c.weight").shape == (1, 2 * (repeat + 1), 1, 1)
