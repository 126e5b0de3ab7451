"""The metric PTQ decisions are judged by: the job's metric (`compression.specs.metrics`) in points, e.g. top-1
accuracy (%) with labels (a regression model's: the rank correlation of its outputs with the values), else top-1
agreement for logits or rank agreement of similarities for embeddings, all against the uncompressed reference
model. All are in points, so an accuracy budget reads the same either way."""

from __future__ import annotations

import torch

from compression.data import Dataset
from compression.evaluate import output_tensor
from compression.fidelity import Fidelity
from compression.labels import LabelScore, as_class_logits
from compression.output_kind import detect_output_kind
from compression.specs.metrics import LABEL_METRICS, chosen_metric

BATCH_SIZE = 256


class Evaluator:
    """Scores models on a fixed subset of one split; the reference's outputs are computed once."""

    def __init__(self, dataset: Dataset, split: str, limit: int | None, reference: torch.nn.Module,
                 output_kind: str | None = None, metric: str | None = None):
        self.batches = list(dataset.split(split).batches(BATCH_SIZE, limit=limit))
        has_labels = all(batch.labels is not None for batch in self.batches)
        with torch.no_grad():
            first = output_tensor(reference(*self.batches[0].inputs)).float()
            values = dataset.split(split).label_values
            self.output_kind = "regression" if values else output_kind or detect_output_kind(reference, first)
            self.name = chosen_metric(metric, self.output_kind, has_labels)
            # Only what the metric reads is kept: a language model's logits over 1000 examples would not fit.
            if self.name in LABEL_METRICS:
                self.targets = [batch.labels for batch in self.batches]
            elif self.name == "top1_agreement":
                self.targets = [self._scores(first).argmax(-1)] + [
                    self._scores(output_tensor(reference(*batch.inputs))).argmax(-1) for batch in self.batches[1:]]
            else:
                self.targets = [first] + [output_tensor(reference(*batch.inputs)).float()
                                          for batch in self.batches[1:]]

    def _scores(self, output: torch.Tensor) -> torch.Tensor:
        """What top-1 reads: a binary classifier's single logit as its two classes."""
        return as_class_logits(output) if self.output_kind == "logits" else output

    def __call__(self, model: torch.nn.Module) -> float:
        if self.name in LABEL_METRICS:
            score = LabelScore(self.output_kind)
            with torch.no_grad():
                for batch, target in zip(self.batches, self.targets):
                    score.add(output_tensor(model(*batch.inputs)), target)
            return 100.0 * score.result()[self.name]
        if self.name == "top1_agreement":
            correct = total = 0
            with torch.no_grad():
                for batch, target in zip(self.batches, self.targets):
                    correct += int((self._scores(output_tensor(model(*batch.inputs))).argmax(-1) == target).sum())
                    total += target.numel()
            return 100.0 * correct / max(total, 1)
        fidelity = Fidelity(self.output_kind)
        with torch.no_grad():
            for batch, target in zip(self.batches, self.targets):
                fidelity.add(output_tensor(model(*batch.inputs)).float(), target)
        return 100.0 * fidelity.result()[self.name]
