"""The metric PTQ decisions are judged by: top-1 accuracy (%) with labels, else top-1 agreement (%) with the
uncompressed reference model. Both are in points, so an accuracy budget reads the same either way."""

from __future__ import annotations

import torch

from compression.data import Dataset
from compression.evaluate import output_tensor

BATCH_SIZE = 256


class Evaluator:
    """Scores models on a fixed subset of one split; the reference's predictions are computed once."""

    def __init__(self, dataset: Dataset, split: str, limit: int | None, reference: torch.nn.Module):
        self.batches = list(dataset.split(split).batches(BATCH_SIZE, limit=limit))
        self.has_labels = all(batch.labels is not None for batch in self.batches)
        if not self.has_labels:
            with torch.no_grad():
                self.targets = [output_tensor(reference(*batch.inputs)).argmax(-1) for batch in self.batches]
        else:
            self.targets = [batch.labels for batch in self.batches]
        self.name = "accuracy" if self.has_labels else "top1_agreement"

    def __call__(self, model: torch.nn.Module) -> float:
        correct = total = 0
        with torch.no_grad():
            for batch, target in zip(self.batches, self.targets):
                prediction = output_tensor(model(*batch.inputs)).argmax(-1)
                correct += int((prediction == target).sum())
                total += target.numel()
        return 100.0 * correct / max(total, 1)
