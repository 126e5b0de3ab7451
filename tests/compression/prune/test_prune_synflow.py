import torch
from torch import nn

from compression.context import RunContext
from compression.prune.masks import WeightMasks, keep_top, magnitude_scores
from compression.prune.synflow import SynflowScorer, synflow_prune, synflow_scores
from tests.compression.prune.conftest import exported

NAMES = ["0.weight", "2.weight", "4.weight"]


def bias_free_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 40, bias=False), nn.ReLU(), nn.Linear(40, 10, bias=False), nn.ReLU(),
                         nn.Linear(10, 5, bias=False)).eval()


def test_scores_are_positive_and_conserved_across_layers():
    model = bias_free_mlp()
    example = (torch.randn(4, 20),)
    scores = synflow_scores(model, NAMES, example)
    with torch.no_grad():
        linearised = [layer.weight.abs().double() for layer in model[::2]]
        r = torch.ones(1, 20, dtype=torch.float64)
        for weight in linearised:
            r = r @ weight.T
        r = float(r.sum())
    for name in NAMES:
        assert (scores[name] >= 0).all()
        # Each layer's scores sum to R = sum f(1; |theta|) (the network is 1-homogeneous in each layer).
        assert abs(float(scores[name].double().sum()) - r) / r < 1e-5
    assert (model[0].weight < 0).any()  # the model itself was not made positive


def test_synflow_works_on_exported_resnet(resnet_program):
    graph_module, example = resnet_program
    names = [n for n, p in graph_module.named_parameters() if p.dim() > 1]
    scores = synflow_scores(graph_module, names, example)
    assert set(scores) == set(names)
    assert all((s >= 0).all() and s.sum() > 0 and s.shape == graph_module.get_parameter(n).shape
               for n, s in scores.items())


def rescaled_bottleneck_mlp() -> nn.Sequential:
    """A function-preserving rescaling that fools magnitude pruning: the middle layer is 100x smaller and the
    next 100x larger (ReLU is positively homogeneous, so the outputs do not change)."""
    model = bias_free_mlp()
    with torch.no_grad():
        model[2].weight.mul_(0.01)
        model[4].weight.mul_(100.0)
    return model


def test_synflow_avoids_the_layer_collapse_of_global_magnitude():
    sparsity = 0.97
    magnitude_model = rescaled_bottleneck_mlp()
    masks = WeightMasks(magnitude_model, NAMES)
    masks.set(keep_top(magnitude_scores(masks), sparsity, "global"))
    assert int(magnitude_model.get_parameter("2.weight").count_nonzero()) == 0  # collapsed
    assert magnitude_model(torch.ones(1, 20)).abs().sum() == 0

    synflow_model = rescaled_bottleneck_mlp()
    synflow_prune(synflow_model, WeightMasks(synflow_model, NAMES), sparsity, iterations=20,
                  example_inputs=(torch.randn(2, 20),), ctx=RunContext())
    kept = {name: int(synflow_model.get_parameter(name).count_nonzero()) for name in NAMES}
    total = sum(synflow_model.get_parameter(name).numel() for name in NAMES)
    assert sum(kept.values()) == total - round(sparsity * total)
    assert all(count > 0 for count in kept.values())
    # Surviving weights still connect input to output.
    assert synflow_model(torch.ones(1, 20)).abs().sum() > 0


def test_synflow_round_scores_do_not_revive_pruned_weights():
    model = exported(bias_free_mlp(), (torch.randn(4, 20),))
    masks = WeightMasks(model, NAMES)
    synflow_prune(model, masks, 0.5, iterations=2, example_inputs=(torch.randn(2, 20),), ctx=RunContext())
    first = {name: model.get_parameter(name) == 0 for name in NAMES}
    synflow_prune(model, masks, 0.8, iterations=2, example_inputs=(torch.randn(2, 20),), ctx=RunContext())
    for name in NAMES:
        assert (model.get_parameter(name)[first[name]] == 0).all()


class _Float32Inside(nn.Module):
    """Builds a float32 tensor in its forward (as transformers' masks and rotary tables are), so it cannot run in
    float64; its `unused` layer feeds nothing."""

    def __init__(self):
        super().__init__()
        self.first, self.second, self.unused = nn.Linear(4, 6), nn.Linear(6, 2), nn.Linear(4, 3)

    def forward(self, x):
        mix = torch.eye(6, dtype=torch.float32) * 0.5  # matmul, unlike mul, does not promote: float64 @ this fails
        return self.second(self.first(x) @ mix)


def test_a_model_that_only_runs_in_float32_is_scored_in_float32_and_dead_weights_score_zero():
    # The float64 copy failed ("Tensor dtype mismatch") on Llama and GPT-2, and a weight without a gradient
    # (RoBERTa's unused pooler) raised a TypeError.
    model = _Float32Inside()
    scorer = SynflowScorer(model, ["first.weight", "second.weight", "unused.weight"], (torch.randn(2, 4),))
    assert scorer.dtype == torch.float32
    scores = scorer.scores()
    assert scores["first.weight"].gt(0).all() and scores["second.weight"].gt(0).all()
    assert scores["unused.weight"].eq(0).all() and scores["unused.weight"].shape == (3, 4)
