"""What labels mean for a model's output: the training loss and the accuracy of a batch.

Labels are class indices (int64 [N]) or a 0/1 label matrix (float [N, K], multi-label; `compression.data`). They
are read as independent binary targets, compared with the output element by element, when the matrix is given or
the model has a single output ([N] or [N, 1]: a binary classifier's one logit or probability); otherwise they are
class indices into the last dimension of class logits (softmax over it, top-1 for accuracy).

Binary targets: a 'sigmoid' output (`compression.output_kind`) is a probability, thresholded at 0.5 and trained
with binary cross-entropy on it; any other output is a logit, thresholded at 0 and trained with binary
cross-entropy with logits. Accuracy is then the fraction of labels the thresholded output agrees with (per example
for one output, per element of the matrix for several).

A sequence output's labels ([N, L] for [N, L, C] logits: a token classifier's tags) are a class index per
position; IGNORED_LABEL (-100, transformers' ignore index) marks positions no label reads (padding, special tokens,
a word's later sub-tokens), left out of the loss and of accuracy. Its score also says "perplexity", the exponential
of the mean cross-entropy over the labelled positions: for a causal LM labelled with each position's next token
(`compression.hf_program.next_token_labels`), its perplexity on the text.

Values (a 'regression' output: float labels [N] or [N, K], one per output) are what the model should predict:
trained with MSE, and scored by the rank correlation of the outputs with them (`LabelScore`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from compression.answer_spans import SpanScore, is_span_output
from compression.archive.npz import IGNORED_LABEL
from compression.ranks import column_spearman
from compression.segmentation import ClassMapScore, is_class_map

# Keeps log() finite on probabilities that saturated at 0 or 1.
_PROBABILITY_EPS = 1e-6
MAX_LOG_PERPLEXITY = 700.0  # exp() of more overflows a float (a collapsed model's cross-entropy)
MAX_SCORED_VALUES = 100_000  # a regression split's values kept for their rank correlation with the outputs


def binary_targets(output: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether `labels` are independent 0/1 targets of `output`'s elements rather than class indices."""
    return labels.is_floating_point() or output.dim() == 1 or output.shape[-1] == 1


def label_loss(output: torch.Tensor, labels: torch.Tensor, output_kind: str) -> torch.Tensor:
    """Cross-entropy for class indices (a row per position of a sequence output [N, L, C]); binary cross-entropy
    (on probabilities for a 'sigmoid' output, with logits otherwise) for binary targets; MSE for the values of a
    'regression' output."""
    output = output.float()
    if output_kind == "regression":
        return F.mse_loss(as_value_shape(output, labels), labels.float())
    if not binary_targets(output, labels):
        rows, targets = output.reshape(-1, output.shape[-1]), labels.reshape(-1)
        if bool((targets == IGNORED_LABEL).all()):  # a batch of padding only: no label to learn (cross_entropy: NaN)
            return rows.sum() * 0.0
        return F.cross_entropy(rows, targets, ignore_index=IGNORED_LABEL)
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
    """(labels the output agrees with, labels): top-1 against class indices (IGNORED_LABEL positions left out); the
    output thresholded (0.5 for a 'sigmoid' probability, 0 for a logit) against binary targets, element by
    element."""
    labels = labels.to(output.device)
    if not binary_targets(output, labels):
        read, predicted = labels != IGNORED_LABEL, output.argmax(-1)
        if predicted.shape != labels.shape:
            # (an output with a unit axis, [N, 1, C], against [N] labels: compared as they are, they broadcast to
            # N x N comparisons and an accuracy over 100 %)
            if predicted.numel() != labels.numel():
                raise ValueError(f"labels of shape {list(labels.shape)} do not fit the model's output "
                                 f"{list(output.shape)}: one class index per row of class scores")
            predicted = predicted.reshape(labels.shape)
        return int(((predicted == labels) & read).sum()), int(read.sum())
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


def as_value_shape(output: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """A regression output in the shape of its labels ([N, 1] outputs for [N] values), refused with the shapes
    when it gives another number of values per example."""
    if output.numel() != values.numel():
        raise ValueError(f"the model gives {output[0].numel() if len(output) else 0} value(s) per example but the "
                         f"regression labels hold {values[0].numel() if len(values) else 0}; label each example "
                         "with one value per model output")
    return output.reshape(values.shape)


class LabelScore:
    """How a model's outputs agree with a split's labels, batch by batch: "accuracy" for class labels and 0/1
    targets (`correct_labels`); for a 'regression' output's values "label_spearman", the rank correlation of each
    target's outputs with its values across examples (averaged over targets; the first MAX_SCORED_VALUES values),
    and "label_mse"."""

    def __init__(self, output_kind: str):
        self.kind = output_kind
        self.correct = self.count = 0
        self.squared_error = 0.0
        self.token_loss, self.tokens = 0.0, 0  # summed cross-entropy of per-position class labels, and their count
        self.outputs: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.spans = SpanScore()  # an extractive reader's answer spans (`compression.answer_spans`)
        self.class_maps = ClassMapScore()  # a segmentation model's masks (`compression.segmentation`)

    def add(self, output: torch.Tensor, labels: torch.Tensor) -> None:
        labels = labels.to(output.device)
        if self.kind != "regression":
            if is_span_output(output, labels):
                self.spans.add(output, labels)
            elif is_class_map(output, labels):
                self.class_maps.add(output, labels)
            agreeing, count = correct_labels(output, labels, self.kind)
            self.correct, self.count = self.correct + agreeing, self.count + count
            if output.dim() == 3 and labels.dim() == 2 and not binary_targets(output, labels) and count:
                self.token_loss += F.cross_entropy(output.float().reshape(-1, output.shape[-1]), labels.reshape(-1),
                                                   ignore_index=IGNORED_LABEL, reduction="sum").item()
                self.tokens += count
            return
        output, values = as_value_shape(output.float(), labels).cpu(), labels.float().cpu()
        self.squared_error += (output - values).pow(2).sum().item()
        self.count += values.numel()
        room = (MAX_SCORED_VALUES - sum(v.numel() for v in self.values)) // max(1, values[0].numel())
        if room > 0:
            self.outputs.append(output[:room])
            self.values.append(values[:room])

    def result(self) -> dict:
        if self.kind != "regression":
            perplexity = {"perplexity": math.exp(min(self.token_loss / self.tokens, MAX_LOG_PERPLEXITY))} \
                if self.tokens else {}
            return {"accuracy": self.correct / max(self.count, 1)} | perplexity | self.spans.result() \
                | self.class_maps.result()
        outputs, values = torch.cat(self.outputs), torch.cat(self.values)
        if len(values) < 3:
            raise ValueError("ranking a regression model's outputs against their values needs at least 3 labelled "
                             "evaluation examples")
        return {"label_spearman": column_spearman(outputs, values), "label_mse": self.squared_error / self.count}
