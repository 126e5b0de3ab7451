"""Distillation losses on outputs, chosen by what the output is, and on intermediate features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from compression.detection import detection_loss
from compression.labels import as_class_logits, binary_targets, label_loss, probability_bce
from compression.output_kind import task_output_kind

# The loss that matches each output kind (compression.specs.metrics.OutputKind): a temperature KL for class
# logits, cosine for embeddings (their direction is what similarities read), binary cross-entropy against the
# teacher's probabilities for independent sigmoid outputs (softmax would couple bins that are independent), MSE
# for hidden states and for the values a regression head predicts (a KL over [0, z] would read a value as a
# binary logit), and for a detector's class scores and boxes their cross-entropy and L1 (`detection_loss`).
OUTPUT_LOSSES = {"logits": "kl", "embeddings": "cosine", "sigmoid": "bce", "hidden_states": "mse",
                 "regression": "mse", "detections": "detection"}
# The losses of outputs that labels can also train (class logits, a binary logit, sigmoid probabilities,
# multi-label logits); and MSE for a regression output, whose labels are its values (`mixes_labels`).
LABEL_LOSSES = ("kl", "bce", "bce_logits")


def mixes_labels(loss: str, output_kind: str | None) -> bool:
    """Whether labels can be mixed into the output loss `loss` of an output of this kind (alpha > 0)."""
    return loss in LABEL_LOSSES or (loss == "mse" and output_kind == "regression")


def kind_and_loss(task, teacher: torch.nn.Module, alpha: float = 0.0, loss: str | None = None) -> tuple[str, str]:
    """The teacher's output kind (the task's declared one, else detected on its example inputs) and the distillation
    loss for it (`loss` where the spec names one, else `output_loss_name`'s), refused where `alpha` > 0 would mix in
    labels that cannot train that output."""
    kind = task_output_kind(task.output_kind, teacher, task.example_inputs)
    loss = loss or output_loss_name(kind, task.multi_label)
    if (loss == "detection") != (kind == "detections"):  # boxes and class scores are read apart
        raise ValueError(f"the 'detection' loss fits 'detections' outputs (an object detector's class scores and "
                         f"boxes) alone; this model's outputs are {kind} and the loss '{loss}': leave kd.loss unset")
    check_label_mix(alpha, loss, kind)
    return kind, loss


def check_label_mix(alpha: float, loss: str, output_kind: str) -> None:
    """Refuse alpha > 0 (labels mixed into the loss) where the labels cannot train the output."""
    if alpha > 0 and not mixes_labels(loss, output_kind):
        raise ValueError(f"alpha > 0 mixes in a hard-label loss, which needs logits, sigmoid probabilities or "
                         f"regression values, but the loss is '{loss}' ({output_kind} outputs); set alpha to 0")


def output_loss_name(kind: str, multi_label: bool) -> str:
    """The loss for an output `kind` (OUTPUT_LOSSES); the logits of a multi-label model are independent labels, so
    each is matched with binary cross-entropy against the teacher's probability ('bce_logits'), not softmax-KL,
    which would couple labels that are independent."""
    return "bce_logits" if multi_label and kind == "logits" else OUTPUT_LOSSES[kind]


def _rows(logits: Tensor) -> Tensor:
    # Sequence or dense outputs ([N, L, C]) are distilled position by position: every row is one distribution.
    return logits.reshape(-1, logits.shape[-1]).float()


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Hinton et al.: T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over rows.

    The T^2 factor keeps the gradient magnitude independent of T (soft-target gradients scale as 1/T^2), so the
    loss can be mixed with cross-entropy without retuning its weight. A single logit z (a binary classifier) is the
    two-class distribution softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)], whose KL is not trivially zero.
    """
    student_logits, teacher_logits = as_class_logits(student_logits), as_class_logits(teacher_logits)
    student_log_probs = F.log_softmax(_rows(student_logits) / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(_rows(teacher_logits).detach() / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="batchmean")
    return kl * temperature**2


def output_loss(student: Tensor, teacher: Tensor, loss: str, temperature: float = 1.0) -> Tensor:
    """How far the student's output is from the teacher's: 'kl' (`kd_loss`), 'cosine' (1 - cosine per row),
    'mse', 'bce' (binary cross-entropy of the student's probabilities against the teacher's), 'bce_logits' (the
    same for logits: of sigmoid(student) against sigmoid(teacher), computed on the logits) or 'detection' (a
    detector's class scores and boxes: `compression.detection.detection_loss`)."""
    if loss == "kl":
        return kd_loss(student, teacher, temperature)
    if loss == "detection":
        return detection_loss(student, teacher)
    student, teacher = _rows(student), _rows(teacher).detach()
    if loss == "cosine":
        return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if loss == "mse":
        return F.mse_loss(student, teacher)
    if loss == "bce":
        return probability_bce(student, teacher)
    if loss == "bce_logits":
        return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))
    raise ValueError(f"unknown distillation loss '{loss}'; known: kl, cosine, mse, bce, bce_logits, detection")


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None, *,
                      temperature: float, alpha: float, loss: str = "kl", output_kind: str | None = None) -> Tensor:
    """(1 - alpha) * output_loss + alpha * the label loss (`compression.labels.label_loss`: cross-entropy with class
    indices, binary cross-entropy with 0/1 targets, MSE with a 'regression' `output_kind`'s values). alpha = 0 needs
    no labels; alpha > 0 needs outputs that labels train: logits (the 'kl' loss), sigmoid probabilities ('bce') or
    regression values ('mse')."""
    distance = output_loss(student_logits, teacher_logits, loss, temperature)
    if alpha == 0:
        return distance
    if not mixes_labels(loss, output_kind):
        raise ValueError(f"alpha > 0 mixes in a hard-label loss, which needs logits or sigmoid probabilities, but the "
                         f"loss is '{loss}'; set alpha to 0")
    if labels is None:
        raise ValueError("alpha > 0 mixes in hard-label cross-entropy, but the training split has no labels")
    if loss in ("bce", "bce_logits") and not binary_targets(student_logits, labels):
        raise ValueError("alpha > 0 with sigmoid outputs needs 0/1 labels (one per output, or a 0/1 label matrix "
                         "[N, K]), not class indices; set alpha to 0")
    hard = label_loss(student_logits, labels, label_loss_kind(loss, output_kind))
    return (1 - alpha) * distance + alpha * hard


def label_loss_kind(loss: str, output_kind: str | None) -> str:
    """The output kind `compression.labels.label_loss` reads labels for, given the distillation loss."""
    if output_kind == "regression":
        return "regression"
    return "sigmoid" if loss == "bce" else "logits"


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
