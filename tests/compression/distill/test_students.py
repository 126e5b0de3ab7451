import copy

import pytest
import torch
from torch import nn

from compression.distill.low_rank import factorize_weight, low_rank_factorize, rank_for_energy
from compression.io import export_model
from compression.specs.distill import KDSpec, LowRankStudent, UploadedStudent, ZooStudent
from compression.students import build_student, parameter_count
from tests.compression.distill.conftest import make_task


@pytest.mark.parametrize("form", ["module", "exported"])
def test_full_rank_factorization_reproduces_the_teacher(conv_net, form):
    model, program, example = conv_net
    teacher = model if form == "module" else program
    student = copy.deepcopy(teacher)
    replaced = low_rank_factorize(student, rank=10_000, skip_unprofitable=False)
    assert {f.name for f in replaced} == {"conv.weight", "pointwise.weight", "fc.weight"}
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(student(x), teacher(x), rtol=1e-4, atol=1e-4)
    assert parameter_count(student) > parameter_count(teacher)


def test_truncation_keeps_the_best_approximation_and_shrinks_the_model(conv_net):
    _, program, _ = conv_net
    student = copy.deepcopy(program)
    replaced = low_rank_factorize(student, rank=3)
    assert {f.name: f.rank for f in replaced} == {"conv.weight": 3, "pointwise.weight": 3, "fc.weight": 3}
    assert parameter_count(student) < parameter_count(program) / 3
    weight = program.fc.weight.detach()
    down, up = factorize_weight(weight, 3)
    error = torch.linalg.matrix_norm(up @ down - weight)
    singular_values = torch.linalg.svdvals(weight)
    # Eckart-Young: the error of the best rank-3 approximation is the norm of the discarded singular values.
    assert error.item() == pytest.approx(singular_values[3:].norm().item(), rel=1e-4)
    x = torch.randn(2, 3, 8, 8)
    assert export_model(student, (x,)).module()(x).shape == (2, 10)


def test_energy_fraction_picks_the_smallest_sufficient_rank():
    singular_values = torch.tensor([4.0, 2.0, 1.0, 1.0])  # energies 16, 4, 1, 1 of 22
    assert rank_for_energy(singular_values, 0.70) == 1
    assert rank_for_energy(singular_values, 16 / 22) == 1
    assert rank_for_energy(singular_values, 0.80) == 2
    assert rank_for_energy(singular_values, 0.95) == 3
    assert rank_for_energy(singular_values, 1.0) == 4
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    weight = q[:, :4] @ torch.diag(singular_values) @ q[:, 2:6].T
    linear = nn.Linear(6, 6)
    linear.weight.data.copy_(weight)
    model = nn.Sequential(linear)
    [plan] = low_rank_factorize(model, energy=0.80, skip_unprofitable=False)
    assert plan.rank == 2


def test_low_rank_spec_needs_exactly_one_criterion():
    with pytest.raises(ValueError, match="exactly one"):
        LowRankStudent(rank=4, energy=0.9)
    with pytest.raises(ValueError, match="exactly one"):
        LowRankStudent()
    spec = KDSpec.model_validate({"student": {"kind": "low_rank", "energy": 0.9}})
    assert isinstance(spec.student, LowRankStudent)


def test_students_from_zoo_and_upload_have_the_teacher_interface(tmp_path, blob_data, mlp_teacher):
    x, y = blob_data
    task = make_task(tmp_path, x, y, mlp_teacher, 512)
    zoo_student = build_student(ZooStudent(architecture="mlp", width=0.25, depth=0.5), mlp_teacher, task)
    assert zoo_student.model(torch.from_numpy(x[:3])).shape == (3, 4)
    assert parameter_count(zoo_student.model) < parameter_count(mlp_teacher) / 4
    uploaded = nn.Linear(16, 4)
    with pytest.raises(RuntimeError, match="resolver"):
        build_student(UploadedStudent(model_id="m1"), mlp_teacher, task)
    task.resolve_model = {"m1": uploaded, "wrong": nn.Linear(16, 5)}.__getitem__
    assert build_student(UploadedStudent(model_id="m1"), mlp_teacher, task).model is uploaded
    with pytest.raises(ValueError, match="output shape"):
        build_student(UploadedStudent(model_id="wrong"), mlp_teacher, task)


def test_an_input_student_trains_a_copy_of_the_stage_input_against_the_upload(conv_net, tmp_path):
    import numpy as np

    from compression.specs.distill import InputStudent
    from compression.students import teacher_and_student
    _, exported, _ = conv_net
    x = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    task = make_task(tmp_path, x, np.zeros(16, np.int64), reference=exported, train=12)
    stage_input = copy.deepcopy(exported)
    teacher, student = teacher_and_student(InputStudent(), stage_input, task)
    assert teacher is task.reference
    assert student.model is not stage_input and student.description == {"kind": "input"}
    assert all(torch.equal(a, b) for a, b in zip(student.model.parameters(), stage_input.parameters()))


def test_distilling_a_pruned_input_student_keeps_its_zeros(conv_net, tmp_path):
    import numpy as np

    from compression.context import RunContext
    from compression.distill.kd import apply_kd
    from compression.prune.masks import prunable_weights
    from compression.specs.distill import InputStudent, KDSpec
    from compression.specs.training import TrainingSpec
    _, exported, _ = conv_net
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 3, 8, 8)).astype(np.float32)
    task = make_task(tmp_path, x, rng.integers(0, 4, 48), reference=exported, train=40)
    pruned = copy.deepcopy(exported)
    with torch.no_grad():
        for weight in prunable_weights(pruned).values():
            weight[weight.abs() < weight.abs().median()] = 0
    before = {name: weight.clone() for name, weight in prunable_weights(pruned).items()}
    spec = KDSpec(student=InputStudent(), training=TrainingSpec(steps=20, batch_size=8, lr=1e-2, weight_decay=0.1))
    student = apply_kd(spec, pruned, task, RunContext()).model
    for name, weight in prunable_weights(student).items():
        assert torch.all(weight[before[name] == 0] == 0), name
        assert not torch.equal(weight, before[name]), name  # the surviving weights did train
