"""Distillation losses on logits and on intermediate features."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def _rows(logits: Tensor) -> Tensor:
    # Sequence or dense outputs ([N, L, C]) are distilled position by position: every row is one distribution.
    return logits.reshape(-1, logits.shape[-1]).float()


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Hinton et al.: T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over rows.

    The T^2 factor keeps the gradient magnitude independent of T (soft-target gradients scale as 1/T^2), so the
    loss can be mixed with cross-entropy without retuning its weight.
    """
    student_log_probs = F.log_softmax(_rows(student_logits) / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(_rows(teacher_logits).detach() / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="batchmean")
    return kl * temperature**2


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None, *,
                      temperature: float, alpha: float) -> Tensor:
    """(1 - alpha) * kd_loss + alpha * cross-entropy with the hard labels (alpha = 0 needs no labels)."""
    loss = kd_loss(student_logits, teacher_logits, temperature)
    if alpha == 0:
        return loss
    if labels is None:
        raise ValueError("alpha > 0 mixes in hard-label cross-entropy, but the training split has no labels")
    hard = F.cross_entropy(_rows(student_logits), labels.reshape(-1))
    return (1 - alpha) * loss + alpha * hard


def feature_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """MSE between a (projected) student feature and the teacher's; spatial maps are pooled to the smaller size
    first so that students with a different stride can still be matched."""
    teacher_feature = teacher_feature.detach().float()
    student_feature = student_feature.float()
    if student_feature.dim() == 4 and student_feature.shape[-2:] != teacher_feature.shape[-2:]:
        size = tuple(min(a, b) for a, b in zip(student_feature.shape[-2:], teacher_feature.shape[-2:]))
        student_feature = F.adaptive_avg_pool2d(student_feature, size)
        teacher_feature = F.adaptive_avg_pool2d(teacher_feature, size)
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(f"feature shapes differ after projection: student {tuple(student_feature.shape)}, "
                         f"teacher {tuple(teacher_feature.shape)}")
    return F.mse_loss(student_feature, teacher_feature)
