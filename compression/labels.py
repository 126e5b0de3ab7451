"""What labels mean for a model's output: the training loss and the accuracy of a batch.

Labels are class indices (int64 [N]) or a 0/1 label matrix (float [N, K], multi-label; `compression.data`). They
are read as independent binary targets, compared with the output element by element, when the matrix is given or
the model has a single output ([N] or [N, 1]: a binary classifier's one logit or probability); otherwise they are
class indices into the last dimension of class logits (softmax over it, top-1 for accuracy).

Binary targets: a 'sigmoid' output (`compression.output_kind`) is a probability, thresholded at 0.5 and trained
with binary cross-entropy on it; any other output is a logit, thresholded at 0 and trained with binary
cross-entropy with logits. Accuracy is then the fraction of labels the thresholded output agrees with (per example
for one output, per element of the matrix for several).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Keeps log() finite on probabilities that saturated at 0 or 1.
_PROBABILITY_EPS = 1e-6


def binary_targets(output: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether `labels` are independent 0/1 targets of `output`'s elements rather than class indices."""
    return labels.is_floating_point() or output.dim() == 1 or output.shape[-1] == 1


def label_loss(output: torch.Tensor, labels: torch.Tensor, output_kind: str) -> torch.Tensor:
    """Cross-entropy for class indices (a row per position of a sequence output [N, L, C]); binary cross-entropy
    (on probabilities for a 'sigmoid' output, with logits otherwise) for binary targets."""
    output = output.float()
    if not binary_targets(output, labels):
        return F.cross_entropy(output.reshape(-1, output.shape[-1]), labels.reshape(-1))
    target = labels.float().reshape(output.shape)
    if output_kind == "sigmoid":
        return probability_bce(output, target)
    return F.binary_cross_entropy_with_logits(output, target)


def probability_bce(probability: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of probabilities against 0/1 (or soft) targets. Written out: F.binary_cross_entropy
    refuses to run under autocast (mixed-precision training)."""
    probability, target = probability.clamp(_PROBABILITY_EPS, 1 - _PROBABILITY_EPS), target.clamp(0, 1)
    return -(target * probability.log() + (1 - target) * (1 - probability).log()).mean()


def correct_labels(output: torch.Tensor, labels: torch.Tensor, output_kind: str) -> tuple[int, int]:
    """(labels the output agrees with, labels): top-1 against class indices; the output thresholded (0.5 for a
    'sigmoid' probability, 0 for a logit) against binary targets, element by element."""
    labels = labels.to(output.device)
    if not binary_targets(output, labels):
        return int((output.argmax(-1) == labels).sum()), labels.numel()
    threshold = 0.5 if output_kind == "sigmoid" else 0.0
    predicted = output.reshape(labels.shape[0], -1) > threshold
    return int((predicted == (labels.reshape(predicted.shape) > 0.5)).sum()), predicted.numel()


def as_class_logits(logits: torch.Tensor) -> torch.Tensor:
    """Class logits [..., C]: a binary classifier's single logit z ([N] or [N, 1]) becomes the two classes [0, z],
    whose softmax is [1 - sigmoid(z), sigmoid(z)], so top-1 and softmax KL mean for it what they mean for C
    classes (on one column they are trivially equal)."""
    if logits.dim() == 1:
        logits = logits.unsqueeze(-1)
    return torch.cat([torch.zeros_like(logits), logits], -1) if logits.shape[-1] == 1 else logits
