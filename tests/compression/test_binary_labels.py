"""Labels of binary (one output) and multi-label models: accuracy by threshold, training by binary cross-entropy."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.context import RunContext
from compression.data import Dataset, Split
from compression.distill.losses import distillation_loss, kd_loss
from compression.evaluate import evaluate
from compression.fidelity import Fidelity
from compression.io import export_model, save_program
from compression.labels import correct_labels, label_loss
from compression.pipeline import run_pipeline
from compression.prune.apply import apply_prune
from compression.qat.apply import train_qat
from compression.quant.evaluate import Evaluator
from compression.specs import EvaluationSpec, PTQSpec
from compression.specs.prune import PruneSpec
from compression.specs.qat import QATSpec
from compression.specs.training import TrainingSpec
from compression.task import Task


def binary_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """6x6 images labelled 1 when the top half is brighter than the bottom half (a linear rule a CNN learns)."""
    x = np.random.default_rng(seed).normal(size=(n, 1, 6, 6)).astype(np.float32)
    return x, (x[:, :, :3].mean((1, 2, 3)) > x[:, :, 3:].mean((1, 2, 3))).astype(np.int64)


def multi_hot(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """8 features; label k is on when feature k is positive (4 independent labels)."""
    x = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
    return x, (x[:, :4] > 0).astype(np.uint8)


def dataset(x: np.ndarray, y: np.ndarray) -> Dataset:
    cut = len(x) * 3 // 4
    return Dataset.from_arrays({"train.x": x[:cut], "train.y": y[:cut], "val.x": x[cut:], "val.y": y[cut:]}, ["x"])


def binary_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 1)).eval()


def multi_label_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.Sigmoid()).eval()


def test_a_logit_is_thresholded_at_zero_and_a_probability_at_one_half():
    logits = Split("val", {"x": np.array([[-1.0], [2.0], [0.5], [-0.2]], np.float32)}, np.array([0, 1, 1, 1]))
    assert evaluate(nn.Identity(), logits, output_kind="logits")["accuracy"] == 0.75  # -0.2 is wrong
    assert evaluate(nn.Flatten(0), logits, output_kind="logits")["accuracy"] == 0.75  # a [batch] output
    probabilities = [0.4, 0.6, 0.3, 0.7]
    inputs = np.array([[math.log(p / (1 - p))] for p in probabilities], np.float32)
    to_probability = export_model(nn.Sequential(nn.Flatten(), nn.Sigmoid()), (torch.zeros(2, 1),)).module()
    split = Split("val", {"x": inputs}, np.array([0, 1, 0, 1]))
    # The graph ends in sigmoid, so 0.5 is the threshold (at 0 every probability would be 1: half right).
    metrics = evaluate(to_probability, split)
    assert metrics["accuracy"] == 1.0 and metrics["metric"] == "accuracy"


def test_multi_label_accuracy_is_the_fraction_of_labels_agreeing():
    outputs = np.array([[0.9, 0.1, 0.6], [0.2, 0.8, 0.4]], np.float32)
    split = Split("val", {"x": outputs}, np.array([[1, 0, 0], [0, 1, 1]], np.float32))
    assert evaluate(nn.Identity(), split, output_kind="sigmoid")["accuracy"] == pytest.approx(4 / 6)
    assert evaluate(nn.Identity(), split, output_kind="logits")["accuracy"] == pytest.approx(3 / 6)  # all > 0
    data = Dataset({"val": split}, ["x"])
    assert Evaluator(data, "val", None, nn.Identity(), output_kind="sigmoid")(nn.Identity()) == pytest.approx(400 / 6)


def test_the_label_loss_is_binary_cross_entropy_for_binary_targets():
    logits, labels = torch.tensor([[-1.0], [2.0]]), torch.tensor([0, 1])
    assert label_loss(logits, labels, "logits") == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, torch.tensor([[0.0], [1.0]]))))
    probabilities, matrix = torch.tensor([[0.9, 0.2], [0.3, 0.6]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert label_loss(probabilities, matrix, "sigmoid") == pytest.approx(
        float(F.binary_cross_entropy(probabilities, matrix)), rel=1e-5)
    classes = torch.tensor([[2.0, 0.0, -1.0]])
    assert label_loss(classes, torch.tensor([0]), "logits") == pytest.approx(
        float(F.cross_entropy(classes, torch.tensor([0]))))


def test_a_single_logit_is_two_classes_for_agreement_kl_and_kd():
    model, reference = torch.tensor([[1.0], [-1.0], [2.0]]), torch.tensor([[1.0], [1.0], [2.0]])
    fidelity = Fidelity("logits")
    fidelity.add(model, reference)
    metrics = fidelity.result()
    assert metrics["top1_agreement"] == pytest.approx(2 / 3)  # one column alone would always agree
    binary_kl = F.kl_div(torch.cat([F.logsigmoid(-model), F.logsigmoid(model)], 1),
                         torch.cat([F.logsigmoid(-reference), F.logsigmoid(reference)], 1), log_target=True,
                         reduction="sum") / 3
    assert metrics["kl"] == pytest.approx(float(binary_kl), rel=1e-5) and metrics["kl"] > 0.1
    assert float(kd_loss(model, reference)) == pytest.approx(float(binary_kl), rel=1e-5)
    labels = torch.tensor([1, 0, 1])
    mixed = distillation_loss(model, reference, labels, temperature=1.0, alpha=0.25)
    bce = F.binary_cross_entropy_with_logits(model, labels.float()[:, None])
    assert float(mixed) == pytest.approx(float(0.75 * binary_kl + 0.25 * bce), rel=1e-5)


def test_qat_trains_a_single_logit_binary_cnn_on_its_labels(tmp_path):
    data = dataset(*binary_images(512))
    example = (torch.from_numpy(data.split("val").inputs["x"][:4]),)
    model = export_model(binary_cnn(), example).module()
    before = evaluate(model, data.split("val"))["accuracy"]
    spec = QATSpec(weight_bits=8, activation_bits=8, first_last_bits=None,
                   training=TrainingSpec(steps=80, batch_size=32, lr=1e-2, warmup_steps=5))
    trained = train_qat(spec, model, Task(data, model, example, tmp_path), RunContext())
    after = evaluate(trained.model, data.split("val"))["accuracy"]
    # From chance to the plateau this data allows (about 0.9 of 128 samples whatever the step count or the CPU's
    # float kernels: 0.898 and 0.906 on AVX2 and AVX-512 machines).
    assert before < 0.7 and after > 0.85, (before, after)
    assert trained.report.steps == 80 and trained.report.final_loss < math.log(2)  # BCE of a coin flip


def test_prune_finetune_trains_a_sigmoid_multi_label_mlp_on_its_label_matrix(tmp_path):
    data = dataset(*multi_hot(512))
    example = (torch.from_numpy(data.split("val").inputs["x"][:4]),)
    model = export_model(multi_label_mlp(), example).module()
    before = evaluate(model, data.split("val"))["accuracy"]
    spec = PruneSpec(sparsity=0.3, finetune=TrainingSpec(steps=120, batch_size=32, lr=1e-2, warmup_steps=5))
    result = apply_prune(spec, model, Task(data, model, example, tmp_path), RunContext())
    after = evaluate(result.model, data.split("val"))["accuracy"]
    assert before < 0.7 and after > 0.9, (before, after)
    assert result.metrics["finetune"]["final_loss"] < math.log(2)  # BCE of a coin flip


def _trained(model: nn.Module, data: Dataset, kind: str, steps: int = 150) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for batch in list(data.split("train").batches(32, shuffle=True)) * (steps // 12 + 1):
        optimizer.zero_grad()
        label_loss(model(*batch.inputs), batch.labels, kind).backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize("arrays, build, kind", [(binary_images, binary_cnn, "logits"),
                                                 (multi_hot, multi_label_mlp, "sigmoid")])
def test_ptq_is_judged_by_the_thresholded_accuracy(tmp_path, arrays, build, kind):
    x, y = arrays(512)
    data = dataset(x, y)
    model = _trained(build(), data, kind)
    with torch.no_grad():
        outputs = model(torch.from_numpy(x[384:]))
    expected = ((outputs > (0.5 if kind == "sigmoid" else 0)).numpy().reshape(len(y[384:]), -1)
                == y[384:].reshape(len(outputs), -1)).mean()
    np.savez(tmp_path / "d.npz", **{"train.x": x[:384], "train.y": y[:384], "val.x": x[384:], "val.y": y[384:]})
    model_path = save_program(export_model(model, (torch.from_numpy(x[:2]),)), tmp_path / "m.pt2")
    evaluation = EvaluationSpec(latency=False, max_metric_drop=3.0)
    result = run_pipeline(model_path, tmp_path / "d.npz", [PTQSpec(calibration_samples=128)], evaluation,
                          RunContext(), tmp_path / "out")
    baseline, final = result.baseline, result.final
    assert baseline["output_kind"] == kind and baseline["metric"] == "accuracy"
    assert baseline["accuracy"] == pytest.approx(expected) and expected > 0.9
    # Not the top-1 of one column (always class 0): the fraction of 0 labels is far from it.
    assert abs(baseline["accuracy"] - (y[384:] == 0).mean()) > 0.3
    assert final["metric_drop"] == pytest.approx(baseline["metric_points"] - final["metric_points"], abs=1e-3)
    assert final["metric_drop"] < 3.0 and final["accuracy"] > 0.85


def test_labels_are_compared_per_row_of_an_output_with_a_unit_axis_and_a_misfit_is_refused():
    # [N, 1, C] scores against [N] labels broadcast to N x N comparisons: an accuracy of several hundred percent
    output = torch.tensor([[[0.0, 1.0, 0.0]], [[2.0, 0.0, 0.0]], [[0.0, 0.0, 3.0]]])
    assert correct_labels(output, torch.tensor([1, 0, 0]), "logits") == (2, 3)
    with pytest.raises(ValueError, match=r"labels of shape \[3\] do not fit the model's output \[3, 2, 3\]"):
        correct_labels(output.expand(3, 2, 3), torch.tensor([1, 0, 0]), "logits")
