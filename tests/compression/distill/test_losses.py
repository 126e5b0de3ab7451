import math

import pytest
import torch

from compression.distill.losses import distillation_loss, feature_loss, kd_loss


def test_kd_loss_is_t_squared_times_kl_of_softened_distributions():
    student = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    teacher = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    temperature = 3.0
    expected = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        p = [math.exp(v / temperature) for v in t_row]
        q = [math.exp(v / temperature) for v in s_row]
        p = [v / sum(p) for v in p]
        q = [v / sum(q) for v in q]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    expected = expected / 2 * temperature**2
    assert kd_loss(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_loss_and_gradient_vanish_when_student_equals_teacher():
    logits = torch.randn(5, 7)
    student = logits.clone().requires_grad_(True)
    loss = kd_loss(student, logits, temperature=4.0)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    assert student.grad.abs().max().item() < 1e-6


def test_alpha_mixes_hard_label_cross_entropy_and_requires_labels():
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    labels = torch.tensor([0, 1, 2, 1])
    mixed = distillation_loss(student, teacher, labels, temperature=2.0, alpha=0.25)
    expected = 0.75 * kd_loss(student, teacher, 2.0) + 0.25 * torch.nn.functional.cross_entropy(student, labels)
    assert mixed.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="labels"):
        distillation_loss(student, teacher, None, temperature=2.0, alpha=0.5)


def test_sequence_logits_are_distilled_per_position():
    student, teacher = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    assert kd_loss(student, teacher, 2.0).item() == pytest.approx(
        kd_loss(student.reshape(10, 3), teacher.reshape(10, 3), 2.0).item(), rel=1e-6)


def test_feature_loss_pools_spatial_maps_to_the_smaller_size():
    teacher = torch.arange(16.0).reshape(1, 1, 4, 4)
    student = torch.nn.functional.avg_pool2d(teacher, 2)
    assert feature_loss(student, teacher).item() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="shapes differ"):
        feature_loss(torch.zeros(2, 3), torch.zeros(2, 4))
