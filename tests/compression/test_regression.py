"""A regression model predicts values (a score, or K targets [N, K]) and is labelled with them: labels that are no
class index are values, trained with MSE, judged by their rank correlation with the outputs (`label_spearman`),
and the outputs are compared with the upload's by their ranks (`score_spearman`, per target)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.context import RunContext
from compression.data import Dataset
from compression.distill.losses import check_label_mix, distillation_loss, output_loss_name
from compression.evaluate import evaluate
from compression.fidelity import Fidelity
from compression.io import export_model, save_program
from compression.labels import LabelScore, label_loss
from compression.pipeline import run_pipeline
from compression.qat.apply import _loss_fn
from compression.quant.evaluate import Evaluator
from compression.specs import EvaluationSpec, PTQSpec
from compression.specs.distill import KDSpec
from compression.specs.metrics import chosen_metric, metric_problem
from compression.task import Task


def regression_data(targets: int, n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and noisy linear targets, [N] for one target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    y = x @ rng.normal(size=(8, targets)).astype(np.float32) + 0.1 * rng.normal(size=(n, targets)).astype(np.float32)
    return x, (y[:, 0] if targets == 1 else y)


def fitted_mlp(x: np.ndarray, y: np.ndarray) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1 if y.ndim == 1 else y.shape[1]))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        optimizer.zero_grad()
        label_loss(model(torch.from_numpy(x)), torch.from_numpy(y), "regression").backward()
        optimizer.step()
    return model.eval()


def test_values_are_scored_by_rank_correlation_and_trained_with_mse():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    score = LabelScore("regression")
    score.add(torch.tensor([[10.0], [20.0], [30.0], [35.0]]), values)  # [N, 1] outputs for [N] values
    result = score.result()
    assert result["label_spearman"] == pytest.approx(1.0)  # the order is right; the scale is not what ranks read
    assert result["label_mse"] == pytest.approx(((torch.tensor([10.0, 20, 30, 35]) - values) ** 2).mean().item())
    reversed_score = LabelScore("regression")
    reversed_score.add(-values, values)
    assert reversed_score.result()["label_spearman"] == pytest.approx(-1.0)
    output = torch.tensor([[1.5], [2.0]], requires_grad=True)
    assert float(label_loss(output, torch.tensor([1.0, 4.0]), "regression")) == pytest.approx((0.25 + 4) / 2)
    with pytest.raises(ValueError, match="gives 3 value\\(s\\) per example but the regression labels hold 1"):
        label_loss(torch.zeros(2, 3), torch.zeros(2), "regression")


def test_several_targets_are_ranked_one_by_one():
    reference = torch.stack([torch.arange(10.0), 100 * torch.arange(10.0).flip(0)], 1)  # scales differ
    fidelity = Fidelity("regression")
    fidelity.add(torch.stack([reference[:, 0], -reference[:, 1]], 1), reference)  # target 0 kept, target 1 reversed
    result = fidelity.result()
    assert result["score_spearman"] == pytest.approx(0.0)  # (1 + -1) / 2
    assert "top1_agreement" not in result and "kl" not in result  # values are no classes
    score = LabelScore("regression")
    score.add(reference + 1, reference)
    assert score.result()["label_spearman"] == pytest.approx(1.0)


def test_the_metric_of_a_regression_output_is_label_spearman_with_labels_and_score_spearman_without():
    assert chosen_metric(None, "regression", True) == "label_spearman"
    assert chosen_metric(None, "regression", False) == "score_spearman"
    assert "use 'label_spearman'" in metric_problem("accuracy", "regression", True)
    assert "needs labels" in metric_problem("label_spearman", "regression", False)
    assert "does not apply to logits outputs" in metric_problem("label_spearman", "logits", True)
    assert output_loss_name("regression", multi_label=False) == "mse"
    check_label_mix(0.5, "mse", "regression")  # labels are values: MSE against them mixes in
    with pytest.raises(ValueError, match="alpha > 0 mixes in a hard-label loss"):
        check_label_mix(0.5, "mse", "hidden_states")
    student, teacher, values = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]), torch.tensor([3.0, 2.0])
    mixed = distillation_loss(student, teacher, values, temperature=1.0, alpha=0.5, loss="mse",
                              output_kind="regression")
    assert float(mixed) == pytest.approx(0.5 * F.mse_loss(student, teacher) + 0.5 * F.mse_loss(student, values))


def test_a_split_labelled_with_values_is_judged_as_regression_even_when_the_caller_detected_logits():
    x, y = regression_data(1, n=40)
    data = Dataset.from_arrays({"val.x": x, "val.y": y}, ["x"])
    model = fitted_mlp(x, y)
    metrics = evaluate(model, data.split("val"), output_kind="logits")
    assert metrics["metric"] == "label_spearman" and metrics["label_spearman"] > 0.95 and "accuracy" not in metrics
    evaluator = Evaluator(data, "val", None, model)
    assert evaluator.name == "label_spearman" and evaluator(model) == pytest.approx(100 * metrics["label_spearman"])


@pytest.mark.parametrize("targets", [1, 3])
def test_a_regression_job_distills_and_quantizes_judged_by_its_values(tmp_path, targets):
    x, y = regression_data(targets)
    model = fitted_mlp(x[:160], y[:160])
    np.savez(tmp_path / "d.npz", **{"train.x": x[:160], "train.y": y[:160], "val.x": x[160:], "val.y": y[160:]})
    model_path = save_program(export_model(model, (torch.from_numpy(x[:2]),)), tmp_path / "m.pt2")
    kd = KDSpec.model_validate({"student": {"kind": "low_rank", "rank": 4}, "alpha": 0.5,
                                "training": {"steps": 30, "batch_size": 32}})
    result = run_pipeline(model_path, tmp_path / "d.npz", [kd, PTQSpec(calibration_samples=64)],
                          EvaluationSpec(latency=False), RunContext(), tmp_path / "out")
    baseline = result.baseline
    assert baseline["output_kind"] == "regression" and baseline["metric"] == "label_spearman"
    assert baseline["label_spearman"] > 0.95 and baseline["score_spearman"] == pytest.approx(1.0)
    distilled = result.stages[0].metrics
    assert distilled["method_metrics"]["loss"] == "mse" and distilled["method_metrics"]["output_kind"] == "regression"
    assert distilled["method_metrics"]["teacher"] == {"label_spearman": pytest.approx(baseline["label_spearman"])}
    fidelity = distilled["method_metrics"]["student_fidelity"]
    assert fidelity["metric"] == "score_spearman" and fidelity["after"] > 90
    for stage in result.stages:
        assert stage.metrics["label_spearman"] > 0.9 and "accuracy" not in stage.metrics
        assert stage.metrics["metric_drop"] == pytest.approx(baseline["metric_points"] - stage.metrics["metric_points"],
                                                             abs=1e-3)


def test_values_with_another_declared_kind_are_refused_before_any_work(tmp_path):
    x, y = regression_data(1, n=40)
    np.savez(tmp_path / "d.npz", **{"train.x": x, "train.y": y, "val.x": x, "val.y": y})
    model_path = save_program(export_model(fitted_mlp(x, y), (torch.from_numpy(x[:2]),)), tmp_path / "m.pt2")
    with pytest.raises(ValueError, match="labels are values .* but evaluation.output_kind is 'logits'; set it to "
                                         "'regression'"):
        run_pipeline(model_path, tmp_path / "d.npz", [PTQSpec()], EvaluationSpec(latency=False, output_kind="logits"),
                     RunContext(), tmp_path / "out")


def test_qat_without_labels_matches_a_single_output_by_its_kind(tmp_path):
    """A single logit's softmax over one column is constant: the plain KL QAT used gave no gradient at all."""
    x, y = regression_data(1, n=32)
    data = Dataset.from_arrays({"train.x": x}, ["x"])
    reference = fitted_mlp(x, y)
    example = (torch.from_numpy(x[:4]),)
    student = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))
    batch = next(data.split("train").batches(32))
    for kind in ("logits", "regression"):
        loss = _loss_fn(False, Task(data, reference, example, tmp_path, output_kind=kind))(student, batch, 0)
        assert float(loss) > 1e-3, kind
        loss.backward()
        assert student[0].weight.grad.abs().sum() > 0
