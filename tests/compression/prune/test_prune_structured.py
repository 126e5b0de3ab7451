import torch
import torch.nn.functional as F
from torch import nn

from compression.io import export_model
from compression.prune.channel_groups import find_channel_groups
from compression.prune.structured import plan_structured, prune_channels
from tests.compression.prune.conftest import exported, randomize_batch_norm


def groups_by_layers(graph_module):
    return {tuple(sorted(p.name for p in group.producers)): group for group in find_channel_groups(graph_module)}


def test_residual_adds_join_channel_groups(resnet_program):
    graph_module, _ = resnet_program
    groups = groups_by_layers(graph_module)
    # Stage 1 has an identity shortcut: the stem's channels and the block's conv2 meet in the add.
    assert ("stages.0.conv2.weight", "stem.0.weight") in groups
    assert ("stages.1.conv2.weight", "stages.1.shortcut.0.weight") in groups
    assert groups[("head.weight",)].frozen_because == ["graph output"]
    stem_group = groups[("stages.0.conv2.weight", "stem.0.weight")]
    resized = {(s.name, s.dim) for s in stem_group.slices}
    assert {("stem.1.running_var", 0), ("stages.0.bn2.weight", 0), ("stages.0.conv1.weight", 1),
            ("stages.1.conv1.weight", 1), ("stages.1.shortcut.0.weight", 1)} <= resized


def zero_channels(graph_module, group, channels):
    """Make `channels` of a group produce exact zeros: producer rows and the BatchNorm affine parameters."""
    with torch.no_grad():
        for piece in group.slices:
            tensor = graph_module.get_parameter(piece.name) if "running" not in piece.name else None
            if tensor is not None and piece.dim == 0:
                tensor[channels] = 0


def test_pruning_all_zero_channels_keeps_outputs_identical(resnet_program):
    graph_module, example = resnet_program
    parameters_before = sum(p.numel() for p in graph_module.parameters())
    for group in find_channel_groups(graph_module):
        if group.prunable:
            zero_channels(graph_module, group, list(range(0, group.size, 2)))
    inputs = torch.randn(5, 1, 16, 16)
    expected = graph_module(inputs)
    plans, _ = plan_structured(graph_module, 0.5, "l1")
    assert all(plan.keep.tolist() == list(range(1, plan.group.size, 2)) for plan in plans)
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, example).module()
    assert sum(p.numel() for p in smaller.parameters()) < 0.4 * parameters_before
    torch.testing.assert_close(smaller(inputs), expected, rtol=1e-5, atol=1e-5)


class FlattenNet(nn.Module):
    """Conv features flattened with a view into a linear layer: the linear's columns go in blocks of H*W."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 4 * 4, 12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc2(F.relu(self.fc1(x.reshape(-1, 8 * 4 * 4))))


def test_flatten_into_linear_and_linear_units_are_pruned_consistently():
    torch.manual_seed(0)
    model = FlattenNet()
    randomize_batch_norm(model)
    example = (torch.randn(4, 3, 8, 8),)
    graph_module = exported(model, example)
    groups = groups_by_layers(graph_module)
    assert {("fc1.weight", 1, 16)} <= {(s.name, s.dim, s.block) for s in groups[("conv.weight",)].slices}
    with torch.no_grad():
        graph_module.conv.weight[[1, 5]] = 0
        graph_module.conv.bias[[1, 5]] = 0
        graph_module.bn.weight[[1, 5]] = 0
        graph_module.bn.bias[[1, 5]] = 0
        graph_module.fc1.weight[[0, 3, 7]] = 0
        graph_module.fc1.bias[[0, 3, 7]] = 0
    inputs = torch.randn(6, 3, 8, 8)
    expected = graph_module(inputs)
    plans, _ = plan_structured(graph_module, 0.25, "l2")
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, example).module()
    assert smaller.fc1.weight.shape == (9, 6 * 16) and smaller.fc2.weight.shape == (3, 9)
    torch.testing.assert_close(smaller(inputs), expected, rtol=1e-5, atol=1e-5)


class ConcatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 1)
        self.b = nn.Conv2d(3, 4, 1)
        self.c = nn.Conv2d(8, 4, 1)
        self.d = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        # a concat passes channels on; a cumulative sum over them mixes them (the pass does not know it)
        return self.d(torch.relu(self.c(torch.cat([self.a(x), self.b(x)], dim=1).cumsum(1)))).mean((2, 3))


def test_ops_the_pass_does_not_know_freeze_their_channels():
    graph_module = exported(ConcatNet(), (torch.randn(2, 3, 4, 4),))
    groups = groups_by_layers(graph_module)
    assert not groups[("a.weight",)].prunable and not groups[("b.weight",)].prunable
    assert groups[("a.weight",)].frozen_because == ["cumsum at cumsum"]
    assert groups[("c.weight",)].prunable
    assert not groups[("d.weight",)].prunable  # reaches the output


def test_pruned_resnet_runs_at_any_batch_size_with_fewer_parameters(resnet_program):
    graph_module, example = resnet_program
    fraction = 0.5
    before = sum(p.numel() for p in graph_module.parameters())
    plans, _ = plan_structured(graph_module, fraction, "l2")
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, example).module()
    after = sum(p.numel() for p in smaller.parameters())
    assert after < (1 - fraction) ** 2 * before * 1.15
    for batch in (1, 3, 17):
        assert smaller(torch.randn(batch, 1, 16, 16)).shape == (batch, 10)


class ErfGeluMLP(nn.Module):
    """ESM's feed-forward: the exact GELU written out with erf between two linears."""

    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(6, 16), nn.Linear(16, 6)

    def forward(self, x):
        hidden = self.up(x)
        return self.down(hidden * 0.5 * (1.0 + torch.erf(hidden / 1.4142135623730951)))


def test_pointwise_functions_such_as_erf_pass_channels_through():
    # erf was an op the pass did not know: ESM's MLP channels were frozen ("erf at erf") and the job refused
    torch.manual_seed(0)
    graph_module = exported(ErfGeluMLP(), (torch.randn(4, 6),))
    group = groups_by_layers(graph_module)[("up.weight",)]
    assert group.prunable, group.frozen_because
    with torch.no_grad():
        graph_module.up.weight[[2, 9, 13, 14]] = 0
        graph_module.up.bias[[2, 9, 13, 14]] = 0
    inputs = torch.randn(5, 6)
    expected = graph_module(inputs)
    plans, _ = plan_structured(graph_module, 0.25, "l2")
    prune_channels(graph_module, plans)
    smaller = export_model(graph_module, (torch.randn(4, 6),)).module()
    assert smaller.up.weight.shape == (12, 6) and smaller.down.weight.shape == (6, 12)
    torch.testing.assert_close(smaller(inputs), expected, rtol=1e-5, atol=1e-5)
