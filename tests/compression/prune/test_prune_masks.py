import copy

import pytest
import torch
from torch import nn

from compression.context import RunContext
from compression.prune.finetune import cubic_sparsity, finetune, gradual_finetune
from compression.prune.masks import (WeightMasks, keep_top, lamp_scores, magnitude_scores, prunable_weights,
                                     sparsity_report, weight_scores)
from compression.specs.prune import GradualScheduleSpec, PruneSpec
from tests.compression.prune.conftest import exported, resnet_task


def prune_by_magnitude(model, sparsity, scope, exclude=()):
    names = list(prunable_weights(model, exclude))
    masks = WeightMasks(model, names)
    masks.set(keep_top(magnitude_scores(masks), sparsity, scope))
    return names, masks


def weight(model, name):
    return model.get_parameter(name)


@pytest.mark.parametrize("sparsity", [0.9, 0.37])
def test_global_sparsity_is_exact_on_exported_model(mlp_task, sparsity):
    model, task = mlp_task
    graph_module = exported(model, task.example_inputs)
    names, _ = prune_by_magnitude(graph_module, sparsity, "global")
    assert names == ["0.weight", "2.weight", "4.weight"]
    report = sparsity_report(graph_module, names)
    assert report["pruned_parameters"] == round(sparsity * report["prunable_parameters"])
    # Global ranking: every surviving weight is at least as large as every pruned one.
    all_weights = torch.cat([weight(graph_module, n).flatten() for n in names])
    originals = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if n in names])
    kept = all_weights != 0
    assert originals[kept].abs().min() >= originals[~kept].abs().max()


def test_layerwise_sparsity_is_exact_in_every_layer(mlp_task):
    model, _ = mlp_task
    names, _ = prune_by_magnitude(model, 0.75, "layerwise")
    report = sparsity_report(model, names)
    for name in names:
        numel = weight(model, name).numel()
        assert report["sparsity_per_layer"][name] == pytest.approx(round(0.75 * numel) / numel, abs=1e-6)


def test_exclude_keeps_layers_dense(mlp_task):
    model, _ = mlp_task
    names, _ = prune_by_magnitude(model, 0.8, "global", exclude=["4.*"])
    assert "4.weight" not in names
    assert (model[4].weight != 0).all()


def test_ties_and_already_zero_weights_still_give_the_exact_count():
    scores = {"a": torch.zeros(10), "b": torch.ones(10)}
    keep = keep_top(scores, 0.3, "global")
    assert int((~keep["a"]).sum() + (~keep["b"]).sum()) == 6


def test_masks_stay_applied_after_finetune_steps_on_an_exported_resnet(tmp_path):
    graph_module, task = resnet_task(tmp_path)
    names, masks = prune_by_magnitude(graph_module, 0.8, "global")
    pruned = {name: ~masks[name].clone() for name in names}
    # AdamW with weight decay and a high learning rate: every weight would move if the masks did not hold.
    spec = PruneSpec(finetune={"steps": 6, "batch_size": 16, "lr": 5e-2, "optimizer": "adamw",
                               "weight_decay": 0.1})
    before = {name: weight(graph_module, name).detach().clone() for name in names}
    finetune(graph_module, spec, task, RunContext(), masks)
    for name in names:
        assert (weight(graph_module, name)[pruned[name]] == 0).all()
    assert any(not torch.equal(weight(graph_module, n)[~pruned[n]], before[n][~pruned[n]]) for n in names)
    assert sparsity_report(graph_module, names)["pruned_parameters"] == round(0.8 * sum(
        weight(graph_module, n).numel() for n in names))


def test_cubic_schedule_starts_at_initial_and_ends_at_target():
    schedule = GradualScheduleSpec(initial_sparsity=0.1, start_step=10, end_step=110, prune_every=10)
    values = [cubic_sparsity(step, 0.9, schedule, 200) for step in range(0, 200, 10)]
    assert values[0] == pytest.approx(0.1) and values[1] == pytest.approx(0.1)
    assert values[11] == pytest.approx(0.9) and values[-1] == pytest.approx(0.9)
    assert all(b >= a for a, b in zip(values, values[1:]))
    # Cubic: a quarter of the way in, 1 - 0.75**3 = 58% of the increase is done.
    assert cubic_sparsity(35, 0.9, schedule, 200) == pytest.approx(0.1 + 0.8 * (1 - 0.75 ** 3))


def test_gradual_pruning_reaches_target_monotonically(mlp_task):
    model, task = mlp_task
    spec = PruneSpec(sparsity=0.8, schedule="gradual", gradual={"prune_every": 4, "end_step": 16},
                     finetune={"steps": 20, "batch_size": 32, "lr": 5e-3})
    names = list(prunable_weights(model))
    masks = WeightMasks(model, names)
    seen = []
    total = sum(weight(model, name).numel() for name in names)

    def mask_sparsity(event):
        seen.append(sum(int((~masks[name]).sum()) for name in names) / total)

    gradual_finetune(model, spec, task, RunContext(report=mask_sparsity), masks)
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    assert seen[0] < 0.5 and seen[-1] == round(0.8 * total) / total
    assert sparsity_report(model, names)["pruned_parameters"] == round(0.8 * total)


def test_lamp_scores_match_the_definition_and_top_weights_score_one():
    layer = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -3.0, 2.0, 0.5]]))
    scores = lamp_scores(WeightMasks(layer, ["weight"]))["weight"].flatten()
    squares = torch.tensor([1.0, 9.0, 4.0, 0.25])
    expected = torch.tensor([1 / (1 + 4 + 9), 1.0, 4 / (4 + 9), 0.25 / 14.25])
    torch.testing.assert_close(scores, expected)
    assert squares.argsort().tolist() == scores.argsort().tolist()


def test_lamp_prunes_globally_without_emptying_a_rescaled_layer():
    """BatchNorm-style rescaling (layer 2 x0.01, layer 3 x100) fools global magnitude but not LAMP."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 40, bias=False), nn.ReLU(), nn.Linear(40, 10, bias=False), nn.ReLU(),
                          nn.Linear(10, 5, bias=False))
    with torch.no_grad():
        model[2].weight.mul_(0.01)
        model[4].weight.mul_(100.0)
    names = ["0.weight", "2.weight", "4.weight"]
    magnitude_masks = WeightMasks(copy.deepcopy(model), names)
    masks = WeightMasks(model, names)
    masks.set(keep_top(weight_scores(masks, "lamp"), 0.95, "global"))
    magnitude_keep = keep_top(weight_scores(magnitude_masks, "magnitude"), 0.95, "global")
    assert not magnitude_keep["2.weight"].any()
    assert all(masks[name].any() for name in names)
    assert sum(int(masks[name].sum()) for name in names) == 1250 - round(0.95 * 1250)
