import pytest
import torch
from torch import nn

from compression.context import RunContext
from compression.prune.finetune import cubic_sparsity, gradual_finetune
from compression.prune.masks import (attach_masks, bake_masks, effective_weight, find_masks, keep_top,
                                     magnitude_scores, prunable_weights, set_masks, sparsity_report)
from compression.specs.prune import GradualScheduleSpec, PruneSpec
from compression.training import train
from tests.compression.prune.conftest import exported


def prune_by_magnitude(model, sparsity, scope, exclude=()):
    names = list(prunable_weights(model, exclude))
    masks = attach_masks(model, names)
    set_masks(masks, keep_top(magnitude_scores(model, names), sparsity, scope))
    return names, masks


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.37])
def test_global_sparsity_is_exact_on_exported_model(mlp_task, sparsity):
    model, task = mlp_task
    graph_module = exported(model, task.example_inputs)
    names, _ = prune_by_magnitude(graph_module, sparsity, "global")
    assert names == ["0.weight", "2.weight", "4.weight"]
    report = sparsity_report(graph_module, names)
    assert report["pruned_parameters"] == round(sparsity * report["prunable_parameters"])
    # Global ranking: every surviving weight is at least as large as every pruned one.
    all_weights = torch.cat([effective_weight(graph_module, n).flatten() for n in names])
    originals = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if n in names])
    kept = all_weights != 0
    assert originals[kept].abs().min() >= originals[~kept].abs().max()


def test_layerwise_sparsity_is_exact_in_every_layer(mlp_task):
    model, _ = mlp_task
    names, _ = prune_by_magnitude(model, 0.75, "layerwise")
    report = sparsity_report(model, names)
    for name in names:
        numel = effective_weight(model, name).numel()
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


def test_masks_stay_applied_after_finetune_steps(mlp_task):
    model, task = mlp_task
    graph_module = exported(model, task.example_inputs)
    names, masks = prune_by_magnitude(graph_module, 0.8, "global")
    pruned_before = {name: ~mask.mask.clone() for name, mask in masks.items()}

    def loss(m, batch, step):
        return nn.functional.cross_entropy(m(*batch.inputs), batch.labels)

    spec = PruneSpec(finetune={"steps": 30, "batch_size": 32, "lr": 1e-2, "optimizer": "adamw",
                               "weight_decay": 0.1}).finetune
    before = sparsity_report(graph_module, names)["sparsity"]
    train(graph_module, loss, spec, task, RunContext())
    for name in names:
        assert (effective_weight(graph_module, name)[pruned_before[name]] == 0).all()
    bake_masks(graph_module)
    assert not find_masks(graph_module)
    assert sparsity_report(graph_module, names)["sparsity"] == pytest.approx(before)


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
    spec = PruneSpec(sparsity=0.8, schedule="gradual", gradual={"prune_every": 5, "end_step": 30},
                     finetune={"steps": 40, "batch_size": 32, "lr": 5e-3})
    names = list(prunable_weights(model))
    masks = attach_masks(model, names)
    seen = []
    context = RunContext(report=lambda event: seen.append(sparsity_report(model, names)["sparsity"]))
    gradual_finetune(model, spec, task, context, masks)
    assert all(b >= a - 1e-9 for a, b in zip(seen, seen[1:]))
    assert seen[0] < 0.5 and seen[-1] == pytest.approx(0.8, abs=1e-3)
