import copy
import zipfile

import pytest
import torch
from torch import nn

from compression.context import RunContext
from compression.data import Dataset
from compression.evaluate import evaluate
from compression.io import export_model, load_model, load_program, save_program
from compression.prune import apply_prune, load_sparse
from compression.prune.finetune import WeightSnapshot, recalibrate_batch_norm
from compression.prune.masks import WeightMasks, keep_top, weight_scores
from compression.specs.prune import PruneSpec
from compression.task import Task
from compression.zoo import build
from tests.compression.prune.conftest import CheckpointStore, exported, fresh_mlp
from tests.compression.real_shapes import TallAudioNet

FINETUNE = {"steps": 40, "batch_size": 32, "lr": 5e-3}


def prunable_sparsity(model: nn.Module) -> float:
    weights = [p for name, p in model.named_parameters() if p.dim() > 1]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def test_unstructured_one_shot_with_finetune_writes_true_size_artifacts(mlp_task):
    model, task = mlp_task
    graph_module = exported(model, task.example_inputs)
    spec = PruneSpec(sparsity=0.9, finetune=FINETUNE)
    result = apply_prune(spec, graph_module, task, RunContext())
    assert result.metrics["collapsed_layers"] == []
    assert result.metrics["pruned_parameters"] == round(0.9 * result.metrics["prunable_parameters"])
    assert prunable_sparsity(result.model) == pytest.approx(0.9, abs=1e-3)
    assert evaluate(result.model, task.dataset.split("val"))["accuracy"] > 0.9
    program, sparse = result.artifacts
    reloaded = load_model(program.path)
    inputs = torch.randn(3, 16)
    torch.testing.assert_close(reloaded(inputs), result.model(inputs))
    weights = load_sparse(sparse.path)
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(weights[name], tensor)
    assert sparse.size_bytes == result.metrics["sparse_weights_bytes"]
    assert result.metrics["dense_weights_bytes"] / sparse.size_bytes > 5


def test_global_magnitude_reports_collapsed_layers(mlp_task):
    _, task = mlp_task
    # Freshly initialised, the last layer (fan-in scaled init) holds the smallest weights: global ranking empties it.
    result = apply_prune(PruneSpec(sparsity=0.9), fresh_mlp(), task, RunContext())
    assert result.metrics["collapsed_layers"] == ["4.weight"]


def teacher_kl(student: nn.Module, teacher: nn.Module, inputs: torch.Tensor) -> float:
    with torch.no_grad():
        log_p = teacher(inputs).log_softmax(-1)
        return float((log_p.exp() * (log_p - student(inputs).log_softmax(-1))).sum(-1).mean())


def test_distillation_recovers_the_teacher_without_labels(mlp_task, tmp_path):
    model, task = mlp_task
    inputs = {split: task.dataset.split(split).inputs["x"] for split in ("train", "val")}
    unlabelled = type(task.dataset).from_arrays({f"{split}.x": x for split, x in inputs.items()}, ["x"])
    task = Task(unlabelled, model, task.example_inputs, tmp_path)
    one_shot = apply_prune(PruneSpec(sparsity=0.9, scope="layerwise"), copy.deepcopy(model), task, RunContext())
    distilled = apply_prune(PruneSpec(sparsity=0.9, scope="layerwise", finetune=FINETUNE, distill={"temperature": 2.0}),
                            copy.deepcopy(model), task, RunContext())
    val = torch.from_numpy(inputs["val"])
    assert teacher_kl(distilled.model, model, val) < 0.5 * teacher_kl(one_shot.model, model, val)
    assert evaluate(distilled.model, unlabelled.split("val"), model)["top1_agreement"] > 0.95


def test_lottery_ticket_rewinding_reaches_sparsity_and_resumes_from_checkpoints(mlp_task):
    model, task = mlp_task
    spec = PruneSpec(sparsity=0.8, rewind_step=5, finetune={**FINETUNE, "steps": 20, "checkpoint_every": 10})
    store = CheckpointStore()
    first = apply_prune(spec, exported(model, task.example_inputs), task, store.context())
    assert {"dense.train", "retrain.train"} <= set(store)
    assert prunable_sparsity(first.model) == pytest.approx(0.8, abs=1e-3)
    again = apply_prune(spec, exported(model, task.example_inputs), task, store.context())
    assert again.metrics["finetune"]["resumed_from_step"] == 20
    for (name, a), (_, b) in zip(first.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_weight_snapshot_restores_parameters_and_statistics(resnet_program):
    graph_module, _ = resnet_program
    snapshot = WeightSnapshot(graph_module)
    recorded = copy.deepcopy(graph_module.state_dict())
    with torch.no_grad():
        for tensor in graph_module.state_dict().values():
            tensor.add_(1)
    snapshot.restore(graph_module)
    for name, tensor in graph_module.state_dict().items():
        assert torch.equal(tensor, recorded[name]), name


def test_synflow_stage_on_exported_resnet(resnet_program, tmp_path):
    graph_module, example = resnet_program
    task = Task(None, graph_module, example, tmp_path)  # data-free: no dataset at all
    spec = PruneSpec(sparsity=0.9, criterion="synflow", synflow_iterations=10, recalibrate_batches=0)
    result = apply_prune(spec, graph_module, task, RunContext())
    assert result.metrics["sparsity"] == pytest.approx(0.9, abs=1e-4)
    assert min(result.metrics["sparsity_per_layer"].values()) < 0.9 < max(result.metrics["sparsity_per_layer"]
                                                                           .values())
    assert max(result.metrics["sparsity_per_layer"].values()) < 1.0


def weight_bytes(pt2_path) -> int:
    with zipfile.ZipFile(pt2_path) as archive:
        return sum(info.file_size for info in archive.infolist() if "/data/" in info.filename)


def test_structured_stage_exports_a_smaller_model(tmp_path):
    torch.manual_seed(0)
    model = build("resnet", base_width=8, base_blocks=1)
    example = (torch.randn(4, 1, 16, 16),)
    original_path = save_program(export_model(model, example), tmp_path / "original.pt2")
    task = Task(None, model, example, tmp_path / "work")
    spec = PruneSpec(kind="structured", sparsity=0.5, recalibrate_batches=0)
    result = apply_prune(spec, copy.deepcopy(model), task, RunContext())
    assert result.metrics["parameter_reduction"] > 0.6
    assert result.metrics["groups_kept_whole"][0]["why"] == ["graph output"]
    artifact = result.artifacts[0]
    removed_bytes = 4 * (result.metrics["parameters_before"] - result.metrics["parameters"])
    # The archive's tensor data lost the bytes of every removed float32 parameter (and BatchNorm statistics).
    assert weight_bytes(original_path) - weight_bytes(artifact.path) > removed_bytes
    inputs = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(load_model(artifact.path)(inputs), result.model(inputs))


@pytest.mark.parametrize("kind", ["structured", "unstructured"])
def test_a_pruned_audio_cnn_comes_back_with_its_tall_convs_on_their_side(tmp_path, kind):
    # CREPE's 103-channel pruned first conv ran 6x slower tall than on its side (bench.conv_channel_counts).
    torch.manual_seed(0)
    model, audio = TallAudioNet().eval(), torch.randn(8, 128)
    task = Task(None, model, (audio[:4],), tmp_path / "work")
    result = apply_prune(PruneSpec(kind=kind, sparsity=0.5, recalibrate_batches=0), copy.deepcopy(model), task,
                         RunContext())
    assert result.metrics["tall_convs_on_their_side"] == 3
    program = load_program(result.artifacts[0].path)
    assert program.state_dict["first.weight"].shape[2:] == (1, 32)
    torch.testing.assert_close(load_model(result.artifacts[0].path)(audio), result.model(audio))
    if kind == "unstructured":  # the pruned weights turned back into the tall model compute the same function
        tall = copy.deepcopy(model)
        for name, value in result.model.state_dict().items():
            target = tall.get_parameter(name)
            target.data.copy_(value if value.shape == target.shape else value.transpose(2, 3))
        torch.testing.assert_close(result.model(audio), tall(audio), rtol=1e-5, atol=1e-5)


def test_batch_norm_recalibration_tracks_the_pruned_activations(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
    x = torch.randn(256, 1, 16, 16)
    dataset = Dataset.from_arrays({"train.x": x.numpy()}, ["x"])
    model[1].momentum = None  # exact dense statistics, then the usual 0.1 momentum for the recalibration
    with torch.no_grad():
        model.train()(x)
    model[1].momentum = 0.1
    model.eval()
    masks = WeightMasks(model, ["0.weight", "4.weight"])
    masks.set(keep_top(weight_scores(masks, "magnitude"), 0.9, "layerwise"))
    with torch.no_grad():
        true_mean = model[0](x).mean((0, 2, 3))
    stale_error = (model[1].running_mean - true_mean).abs().max()
    recalibrate_batch_norm(model, Task(dataset, model, (x[:4],), tmp_path), RunContext(), batches=50, batch_size=32)
    assert not model.training
    assert (model[1].running_mean - true_mean).abs().max() < 0.2 * stale_error


@pytest.mark.parametrize("momentum, decomposed", [(0.0, False), (0.1, False), (0.1, True)])
def test_recalibration_averages_every_pass_whatever_the_momentum_of_an_exported_batch_norm(tmp_path, momentum,
                                                                                          decomposed):
    # Momentum 0 (torchcrepe's frozen statistics) made the old moving-average recalibration a no-op, and at 0.1
    # 16 passes kept 19 % of the stale value: each statistic is now the plain mean of the per-batch ones. A program
    # decomposed to core ATen before upload holds another batch-norm op, recalibrated alike.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8, momentum=momentum), nn.ReLU()).eval()
    x = torch.randn(256, 1, 16, 16) * 2 + 0.5
    exported_program = export_model(model, (x[:4],))
    if decomposed:
        exported_program = exported_program.run_decompositions()
    program = exported_program.module()
    targets = {n.target for n in program.graph.nodes if "batch_norm" in str(n.target)}
    dataset = Dataset.from_arrays({"train.x": x.numpy()}, ["x"])
    recalibrate_batch_norm(program, Task(dataset, program, (x[:4],), tmp_path), RunContext(), batches=16,
                           batch_size=32)
    with torch.no_grad():
        conv = model[0](x)
    # 16 passes of 32 are two shuffled epochs: the mean of the batch means is the data's mean.
    torch.testing.assert_close(program.get_buffer("1.running_mean"), conv.mean((0, 2, 3)), rtol=0, atol=1e-5)
    torch.testing.assert_close(program.get_buffer("1.running_var"), conv.var((0, 2, 3)), rtol=0.05, atol=0)
    # The program is back as it was: the same ops, in inference mode.
    assert {n.target for n in program.graph.nodes if "batch_norm" in str(n.target)} == targets
    with torch.no_grad():
        torch.testing.assert_close(program(x[:8]), program(x[:8]))
        model[1].running_mean.copy_(program.get_buffer("1.running_mean"))
        model[1].running_var.copy_(program.get_buffer("1.running_var"))
        torch.testing.assert_close(program(x[:8]), model(x[:8]))


def test_a_structured_prune_that_rounds_every_group_to_nothing_says_which_sparsity_would_do(tmp_path):
    # An earlier prune left 3 heads in an attention (ALBERT); 0.25 of 3 rounds down to none.
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    example = (torch.randn(4, 4),)
    task = Task(None, model, example, tmp_path / "work")
    with pytest.raises(ValueError) as raised:
        apply_prune(PruneSpec(kind="structured", sparsity=0.25, recalibrate_batches=0), model, task, RunContext())
    assert "graph output" in str(raised.value)  # the last layer's group
    assert "groups of 3 channels lose none at this sparsity: raise it to at least 0.34" in str(raised.value)
