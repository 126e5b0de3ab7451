import pytest
import torch

from compression.context import RunContext
from compression.distill.kd import apply_kd
from compression.io import load_model
from compression.modes import eval_mode
from compression.specs.distill import KDSpec
from compression.specs.training import TrainingSpec
from tests.compression.distill.conftest import accuracy, image_task, make_task


def test_kd_student_with_a_quarter_of_the_parameters_matches_the_teacher(tmp_path, blob_data, mlp_teacher):
    x, y = blob_data
    task = make_task(tmp_path, x, y, mlp_teacher, 512)
    spec = KDSpec(student={"kind": "zoo", "architecture": "mlp", "width": 0.125, "depth": 0.5},
                  temperature=4.0, alpha=0.2, training=TrainingSpec(steps=80, batch_size=64, lr=1e-2))
    result = apply_kd(spec, mlp_teacher, task, RunContext())
    metrics = result.metrics
    assert metrics["parameter_ratio"] < 0.25
    assert metrics["student"]["top1_agreement"] >= 0.95
    assert metrics["student"]["accuracy"] >= accuracy(mlp_teacher, x[512:], y[512:]) - 0.05
    [artifact] = result.artifacts
    x_val = torch.from_numpy(x[512:])
    with torch.no_grad():
        torch.testing.assert_close(load_model(artifact.path)(x_val), result.model(x_val))


def test_low_rank_student_of_an_exported_teacher(tmp_path, conv_net):
    _, program, _ = conv_net
    task = image_task(tmp_path, program, labels=True)
    spec = KDSpec(student={"kind": "low_rank", "rank": 4}, temperature=2.0,
                  training=TrainingSpec(steps=30, batch_size=32, lr=3e-3))
    before = _agreement(_low_rank_untrained(program, task), program, task)
    result = apply_kd(spec, program, task, RunContext())
    assert result.metrics["student_spec"]["layers"] == {"conv.weight": 4, "pointwise.weight": 4, "fc.weight": 4}
    assert result.metrics["student"]["top1_agreement"] > before + 0.05
    inputs = torch.from_numpy(task.dataset.split("val").inputs["x"])
    with torch.no_grad():
        torch.testing.assert_close(load_model(result.artifacts[0].path)(inputs), result.model(inputs))


def test_hard_labels_are_required_only_when_alpha_is_positive(tmp_path, conv_net):
    _, program, _ = conv_net
    task = image_task(tmp_path, program, labels=False)
    spec = KDSpec(student={"kind": "low_rank", "rank": 4}, alpha=0.5, training=TrainingSpec(steps=1))
    with pytest.raises(ValueError, match="labels"):
        apply_kd(spec, program, task, RunContext())


def _low_rank_untrained(program, task):
    from compression.specs.distill import LowRankStudent
    from compression.students import build_student
    return build_student(LowRankStudent(rank=4), program, task).model


def _agreement(student, teacher, task) -> float:
    inputs = torch.from_numpy(task.dataset.split("val").inputs["x"])
    with torch.no_grad():
        return float((eval_mode(student)(inputs).argmax(-1) == teacher(inputs).argmax(-1)).float().mean())
