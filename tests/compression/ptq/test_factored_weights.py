"""Weights a program computes from stored factors (weight norm, spectral norm) are stored once, so every method
finds the layer; shared inputs and weights that would grow are left as they are."""

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrizations

from compression.context import RunContext
from compression.io import export_model, save_program
from compression.pipeline import run_pipeline
from compression.ptq.computed_weights import store_factored_weights
from compression.quant.graph import find_layers
from compression.specs import EvaluationSpec, PruneSpec, PTQSpec


class _Normed(nn.Module):
    """A weight-normed conv (WaveNet/HiFi-GAN) into a spectral-normed linear (a GAN discriminator's head)."""

    def __init__(self):
        super().__init__()
        self.conv = parametrizations.weight_norm(nn.Conv1d(2, 8, 3, padding=1))
        self.head = parametrizations.spectral_norm(nn.Linear(8, 4))

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(-1))


def _program(model, example):
    return export_model(model.eval(), example)


def test_parametrized_weights_are_stored_under_the_layers_own_names_and_compute_the_same():
    torch.manual_seed(0)
    graph = _program(_Normed(), (torch.randn(2, 2, 16),)).module()
    x = torch.randn(5, 2, 16)
    with torch.no_grad():
        before = graph(x)
    assert store_factored_weights(graph) == ["conv.weight", "head.weight"]
    with torch.no_grad():
        torch.testing.assert_close(graph(x), before, rtol=1e-6, atol=1e-6)
    names = {name for name, _ in graph.named_parameters()} | {name for name, _ in graph.named_buffers()}
    assert not any("parametrizations" in name for name in names), names
    assert isinstance(graph.get_parameter("conv.weight"), nn.Parameter)  # trained methods train it
    assert {layer.name for layer in find_layers(graph)} == {"conv", "head"}


class _SharedAndLowRank(nn.Module):
    """A table scaled for an output layer that an embedding also reads, and a weight written as a low-rank
    product: storing either would add bytes."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(20, 8))
        self.left, self.right = nn.Parameter(torch.randn(16, 2)), nn.Parameter(torch.randn(2, 8))

    def forward(self, ids):
        hidden = self.table[0] + nn.functional.embedding(ids, self.table).mean(1)
        hidden = nn.functional.linear(hidden, self.left @ self.right)
        return nn.functional.linear(hidden[:, :8], self.table * 0.5)


def test_shared_inputs_and_weights_that_would_grow_stay_computed():
    graph = _program(_SharedAndLowRank(), (torch.randint(0, 20, (2, 5)),)).module()
    assert store_factored_weights(graph) == []
    assert {"table", "left", "right"} <= {name for name, _ in graph.named_parameters()}


def test_a_weight_normed_upload_is_quantized_and_pruned(tmp_path):
    """int8 PTQ left every weight-normed layer float (94 % of a TCN's weights) and structured pruning found no
    channel group: the layers' weights were computed, not stored."""
    torch.manual_seed(0)
    save_program(_program(_Normed(), (torch.randn(2, 2, 16),)), tmp_path / "m.pt2")
    signals = np.random.default_rng(0).standard_normal((48, 2, 16)).astype("float32")
    np.savez(tmp_path / "d.npz", **{"train.x": signals[:32], "val.x": signals[32:]})

    def job(spec, name):
        return run_pipeline(tmp_path / "m.pt2", tmp_path / "d.npz", [spec], EvaluationSpec(latency=False),
                            RunContext(), tmp_path / name)

    quantized = job(PTQSpec(calibration_samples=16), "ptq")
    assert quantized.baseline["computed_weights_stored"] == ["conv.weight", "head.weight"]
    assert quantized.final["method_metrics"]["quantized_layers"] == 2
    assert quantized.final["top1_agreement"] > 0.8
    pruned = job(PruneSpec(kind="structured", sparsity=0.25), "prune")
    assert pruned.final["method_metrics"]["parameter_reduction"] > 0.1


class _GainScaledConv(nn.Conv2d):
    """NFNet's ScaledStdConv2d: the standardized filter times a per-filter gain, both parameters of the conv."""

    def __init__(self):
        super().__init__(3, 8, 3)
        self.gain = nn.Parameter(torch.rand(8, 1, 1, 1) + 0.5)

    def forward(self, x):
        weight = nn.functional.batch_norm(self.weight.reshape(1, 8, -1), None, None, weight=self.gain.view(-1),
                                          training=True, eps=1e-6).reshape_as(self.weight)
        return nn.functional.conv2d(x, weight, self.bias)


def test_a_weight_computed_from_the_layers_own_weight_and_a_gain_keeps_the_name_weight():
    torch.manual_seed(0)
    graph = _program(nn.Sequential(_GainScaledConv()), (torch.randn(2, 3, 8, 8),)).module()
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        before = graph(x)
    assert store_factored_weights(graph) == ["0.weight"]
    assert {name for name, _ in graph.named_parameters()} == {"0.weight", "0.bias"}  # the gain is folded in
    with torch.no_grad():
        torch.testing.assert_close(graph(x), before, rtol=1e-5, atol=1e-5)


def test_a_weight_computed_through_a_huge_intermediate_is_not_computed_at_load():
    # an upload's graph could expand a factor enormously before cutting it back: judged by the traced shapes
    class Expanding(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Parameter(torch.randn(8, 16)), nn.Parameter(torch.randn(1, 16))

        def forward(self, x):
            return nn.functional.linear(x, (self.a.repeat(64, 1) * self.b)[:8])

    graph = _program(Expanding(), (torch.randn(2, 16),)).module()
    assert store_factored_weights(graph) == []
