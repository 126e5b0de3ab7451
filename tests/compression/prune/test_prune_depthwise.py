"""Structured pruning through depthwise convs (MobileNet, EfficientNet, ShuffleNet, ConvNeXt): a conv with one
filter per channel carries its input's channels to its output, so the 1x1 expansion before it is pruned with the
filters, bias entries and `groups` count of the depthwise conv, the BatchNorm after it and the projection's input
columns. Models whose removed channels were exactly zero must compute the same outputs."""

import torch
import torch.nn.functional as F
from torch import nn

from compression.prune.structured import plan_structured
from tests.compression.prune.conftest import exported
from tests.compression.prune.test_prune_concat import groups_by_layers, prune_zeroed_and_compare


def conv_bn_act(cin: int, cout: int, kernel: int = 1, groups: int = 1, act=nn.ReLU6) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), act())


class InvertedResidualNet(nn.Module):
    """MobileNetV2: 1x1 expansion, depthwise 3x3 (with a bias here, which must shrink too), 1x1 projection."""

    def __init__(self, width: int = 6, expand: int = 4):
        super().__init__()
        hidden = width * expand
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.expand = conv_bn_act(width, hidden)
        self.depthwise = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.BatchNorm2d(hidden),
                                       nn.Hardswish())
        self.project = nn.Sequential(nn.Conv2d(hidden, width, 1, bias=False), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.depthwise(self.expand(x)))
        return self.head(x.mean((2, 3)))


class ConcatThenDepthwise(nn.Module):
    """Two branches concatenated, then one depthwise conv over both: each branch's channels are a segment of its
    filters."""

    def __init__(self):
        super().__init__()
        self.left, self.right = conv_bn_act(3, 4), conv_bn_act(3, 6, 3)
        self.depthwise = conv_bn_act(10, 10, 5, groups=10)
        self.mix = nn.Conv2d(10, 8, 1)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        return self.head(self.mix(self.depthwise(torch.cat([self.left(x), self.right(x)], 1))).mean((2, 3)))


class SqueezedDepthwiseWeight(nn.Module):
    """Mamba's slow path: a 1-D depthwise conv whose weight reaches it squeezed to [C, K] and unsqueezed back,
    padded on both sides and cut back to the sequence length."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.proj = nn.Conv1d(4, channels, 1)
        self.conv = nn.Conv1d(channels, channels, 4, groups=channels, padding=3)
        self.out = nn.Conv1d(channels, 4, 1)

    def forward(self, x):
        weight = self.conv.weight.squeeze(1).unsqueeze(1)
        mixed = F.conv1d(self.proj(x), weight, self.conv.bias, padding=3, groups=self.conv.groups)
        return self.out(F.silu(mixed[..., :x.shape[-1]])).mean(-1)


class MultiplierAndGrouped(nn.Module):
    """A depthwise conv with two filters per channel, and a conv in two groups: neither carries channels one to
    one, so the channels they read stay."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.doubled = nn.Conv2d(4, 8, 3, padding=1, groups=4)
        self.grouped = nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        return self.head(torch.cat([self.doubled(self.a(x)), self.grouped(self.b(x))], 1).mean((2, 3)))


def test_the_expansion_before_a_depthwise_conv_is_pruned_with_its_filters_and_groups():
    smaller = prune_zeroed_and_compare(InvertedResidualNet(), (torch.randn(2, 3, 8, 8),), torch.randn(5, 3, 8, 8),
                                       {"expand.0.weight"})
    # the residual stream (stem and projection, one group) loses half its 6 channels too
    assert smaller.get_parameter("expand.0.weight").shape == (12, 3, 1, 1)
    assert smaller.get_parameter("depthwise.0.weight").shape == (12, 1, 3, 3)
    assert smaller.get_parameter("depthwise.0.bias").shape == (12,)
    assert smaller.get_buffer("depthwise.1.running_mean").shape == (12,)
    assert smaller.get_parameter("project.0.weight").shape == (3, 12, 1, 1)
    [conv] = [node for node in smaller.graph.nodes if node.op == "call_function"
              and node.target == torch.ops.aten.conv2d.default and node.args[1].target == "depthwise.0.weight"]
    assert conv.args[6] == 12  # one group per kept channel


def test_branches_concatenated_before_a_depthwise_conv_lose_their_segments_of_its_filters():
    smaller = prune_zeroed_and_compare(ConcatThenDepthwise(), (torch.randn(2, 3, 8, 8),), torch.randn(5, 3, 8, 8),
                                       {"left.0.weight", "right.0.weight"})
    assert smaller.get_parameter("depthwise.0.weight").shape == (5, 1, 5, 5)
    assert smaller.get_parameter("mix.weight").shape == (4, 5, 1, 1)


def test_a_depthwise_weight_squeezed_and_unsqueezed_on_its_way_is_still_the_parameter_pruned():
    smaller = prune_zeroed_and_compare(SqueezedDepthwiseWeight(), (torch.randn(2, 4, 8),), torch.randn(5, 4, 8),
                                       {"proj.weight"})
    assert smaller.get_parameter("conv.weight").shape == (4, 1, 4)
    assert smaller.get_parameter("out.weight").shape == (4, 4, 1)


def test_a_depthwise_multiplier_or_a_grouped_conv_keeps_the_channels_it_reads():
    groups = groups_by_layers(exported(MultiplierAndGrouped(), (torch.randn(2, 3, 8, 8),)))
    assert not groups[("a.weight",)].prunable and not groups[("b.weight",)].prunable
    assert any("cannot be resized" in reason for reason in groups[("a.weight",)].frozen_because)
    plans, _ = plan_structured(exported(MultiplierAndGrouped(), (torch.randn(2, 3, 8, 8),)), 0.5)
    assert {name for plan in plans for name in (p.name for p in plan.group.producers)} <= {
        "doubled.weight", "grouped.weight"}
