"""The metric PTQ decisions are judged by: the job's metric (`compression.specs.metrics`) in points, e.g. top-1
accuracy (%) with labels, else top-1 agreement for logits or rank agreement of similarities for embeddings, all
against the uncompressed reference model. All are in points, so an accuracy budget reads the same either way."""

from __future__ import annotations

import torch

from compression.data import Dataset
from compression.evaluate import output_tensor
from compression.fidelity import Fidelity
from compression.output_kind import detect_output_kind
from compression.specs.metrics import chosen_metric

BATCH_SIZE = 256


class Evaluator:
    """Scores models on a fixed subset of one split; the reference's outputs are computed once."""

    def __init__(self, dataset: Dataset, split: str, limit: int | None, reference: torch.nn.Module,
                 output_kind: str | None = None, metric: str | None = None):
        self.batches = list(dataset.split(split).batches(BATCH_SIZE, limit=limit))
        has_labels = all(batch.labels is not None for batch in self.batches)
        with torch.no_grad():
            self.targets = [output_tensor(reference(*batch.inputs)).float() for batch in self.batches]
        self.output_kind = output_kind or detect_output_kind(reference, self.targets[0])
        self.name = chosen_metric(metric, self.output_kind, has_labels)

    def __call__(self, model: torch.nn.Module) -> float:
        with torch.no_grad():
            outputs = [output_tensor(model(*batch.inputs)).float() for batch in self.batches]
        if self.name == "accuracy":
            correct = sum(int((out.argmax(-1) == batch.labels).sum()) for out, batch in zip(outputs, self.batches))
            return 100.0 * correct / max(sum(len(batch) for batch in self.batches), 1)
        fidelity = Fidelity(self.output_kind)
        for output, target in zip(outputs, self.targets):
            fidelity.add(output, target)
        return 100.0 * fidelity.result()[self.name]
