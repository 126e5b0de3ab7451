"""Structured pruning of the hidden units of recurrent layers (LSTM, GRU): every layer and direction loses the same
units, and the pruned program computes exactly what the same modules built with fewer units compute with the kept
rows and columns."""

import torch
from torch import nn

from compression.prune.channel_groups import find_channel_groups
from compression.prune.structured import plan_structured, prune_channels


def _exported(model: nn.Module, example: torch.Tensor, batch_dim: int = 0):
    batch = torch.export.Dim("batch", min=1, max=64)
    return torch.export.export(model.eval(), (example,), dynamic_shapes=({batch_dim: batch},)).module()


def _gate_rows(keep: torch.Tensor, hidden: int, gates: int) -> torch.Tensor:
    return torch.cat([gate * hidden + keep for gate in range(gates)])


def _copy_recurrent(big: nn.Module, small: nn.Module, keep: torch.Tensor, gates: int, inputs_kept=None) -> None:
    """`small`'s weights: `big`'s rows and columns of the kept hidden units (and kept input columns)."""
    hidden, directions = big.hidden_size, 2 if big.bidirectional else 1
    rows = _gate_rows(keep, hidden, gates)
    below = torch.cat([direction * hidden + keep for direction in range(directions)])
    for name, tensor in big.named_parameters():
        tensor = tensor.detach()[rows]
        if name.startswith("weight_hh"):
            tensor = tensor[:, keep]
        elif name.startswith("weight_ih") and not name.startswith("weight_ih_l0"):
            tensor = tensor[:, below]
        elif name.startswith("weight_ih") and inputs_kept is not None:
            tensor = tensor[:, inputs_kept]
        getattr(small, name).data.copy_(tensor)


class _Tagger(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.embedding = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, 5)

    def forward(self, ids):
        output, _ = self.lstm(self.embedding(ids))
        return self.head(output)


def test_a_two_layer_bidirectional_lstm_loses_the_same_hidden_units_everywhere():
    torch.manual_seed(0)
    model = _Tagger()
    graph_module = _exported(model, torch.randint(0, 50, (2, 7)))
    plans, _ = plan_structured(graph_module, 0.5)
    [plan] = [plan for plan in plans if plan.group.unit == "hidden units"]
    prune_channels(graph_module, plans)
    keep = plan.keep
    assert graph_module.lstm.weight_hh_l1_reverse.shape == (4 * 16, 16) and graph_module.head.weight.shape == (5, 32)

    smaller = _Tagger(hidden=16).eval()
    smaller.embedding.load_state_dict(model.embedding.state_dict())
    _copy_recurrent(model.lstm, smaller.lstm, keep, gates=4)
    smaller.head.weight.data.copy_(model.head.weight.detach()[:, torch.cat([keep, 32 + keep])])
    smaller.head.bias.data.copy_(model.head.bias.detach())
    ids = torch.randint(0, 50, (3, 7))  # another batch: the initial state's batch stays dynamic
    with torch.no_grad():
        torch.testing.assert_close(graph_module(ids), smaller(ids), atol=1e-5, rtol=1e-5)


class _Classifier(nn.Module):
    """A linear layer into a sequence-first GRU whose final state is classified."""

    def __init__(self, features: int = 16, hidden: int = 24):
        super().__init__()
        self.inputs = nn.Linear(8, features)
        self.gru = nn.GRU(features, hidden)
        self.head = nn.Linear(hidden, 3)

    def forward(self, x):
        _, final = self.gru(torch.relu(self.inputs(x)))
        return self.head(final[-1])


def test_a_gru_and_the_linear_layer_before_it_are_pruned_together():
    torch.manual_seed(0)
    model = _Classifier()
    graph_module = _exported(model, torch.randn(5, 2, 8), batch_dim=1)  # (time, batch, features)
    plans, _ = plan_structured(graph_module, 0.5)
    assert sorted((plan.group.unit, plan.group.size) for plan in plans) == [("channels", 16), ("hidden units", 24)]
    prune_channels(graph_module, plans)
    features = next(plan.keep for plan in plans if plan.group.unit == "channels")
    hidden = next(plan.keep for plan in plans if plan.group.unit == "hidden units")

    smaller = _Classifier(features=8, hidden=12).eval()
    smaller.inputs.weight.data.copy_(model.inputs.weight.detach()[features])
    smaller.inputs.bias.data.copy_(model.inputs.bias.detach()[features])
    _copy_recurrent(model.gru, smaller.gru, hidden, gates=3, inputs_kept=features)
    smaller.head.weight.data.copy_(model.head.weight.detach()[:, hidden])
    smaller.head.bias.data.copy_(model.head.bias.detach())
    x = torch.randn(5, 3, 8)
    with torch.no_grad():
        torch.testing.assert_close(graph_module(x), smaller(x), atol=1e-5, rtol=1e-5)


class _Stateful(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(8, 16, batch_first=True)

    def forward(self, x, state):
        output, _ = self.gru(x, state)
        return output


def test_a_state_passed_in_keeps_the_hidden_units():
    model = _Stateful().eval()
    graph_module = torch.export.export(model, (torch.randn(2, 5, 8), torch.zeros(1, 2, 16))).module()
    [group] = [group for group in find_channel_groups(graph_module) if group.unit == "hidden units"]
    assert "gru at gru starts from a state passed in" in group.frozen_because
