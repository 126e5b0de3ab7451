"""Quality of a model on a split: accuracy when the split has labels, fidelity to a reference model otherwise.

Fidelity compares the outputs of the model and of the uncompressed reference on the same inputs, in the way the
output kind is used (`compression.fidelity`; the kind is declared, or detected by `compression.output_kind`).
One of the numbers is the job's metric (`compression.specs.metrics`): it is also given in points, which
`metric_drop` and the budgets compare.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from compression.data import Split
from compression.fidelity import Fidelity, sqnr_db
from compression.modes import evaluating
from compression.output_kind import detect_output_kind
from compression.specs.metrics import chosen_metric


def output_tensor(output) -> torch.Tensor:
    """The main tensor of a model output: the tensor itself, or the first tensor of a tuple/list/dict output."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)) and output:
        return output_tensor(output[0])
    raise TypeError(f"cannot read a tensor from a model output of type {type(output).__name__}")


def evaluate(model: torch.nn.Module, split: Split, reference: torch.nn.Module | None = None,
             batch_size: int = 256, max_samples: int | None = None, output_kind: str | None = None,
             metric: str | None = None) -> dict:
    """{"samples", "accuracy" (with labels)}, plus the fidelity metrics of the output kind vs `reference`, plus
    {"metric": its name, "metric_points": its value in points}.

    `output_kind` None detects it from the reference's first batch; `metric` None picks accuracy with labels, else
    the output kind's default. Without labels a reference is required. Both models run in eval mode without
    autograd, each on the device that holds its weights; their previous modes are restored afterwards, so this can
    be called in the middle of training.
    """
    if not split.has_labels and reference is None:
        raise ValueError(f"split '{split.name}' has no labels: pass the reference model to measure fidelity")
    if reference is None and metric not in (None, "accuracy"):
        raise ValueError(f"metric '{metric}' compares with a reference model: pass it")
    correct = examples = 0
    fidelity: Fidelity | None = None
    with evaluating(model), (evaluating(reference) if reference is not None else nullcontext()):
        for batch in split.batches(batch_size, limit=max_samples):
            outputs = output_tensor(model(*_to(batch.inputs, model))).float().cpu()
            examples += len(batch)
            if batch.labels is not None:
                correct += (outputs.argmax(-1) == batch.labels).sum().item()
            if reference is not None:
                # A model compared with itself (an unlabelled upload's baseline) runs once, not twice.
                expected = outputs if reference is model else output_tensor(
                    reference(*_to(batch.inputs, reference))).float().cpu()
                if fidelity is None:
                    fidelity = Fidelity(output_kind or detect_output_kind(reference, expected))
                fidelity.add(outputs, expected)
    metrics = {"samples": examples}
    if split.has_labels:
        metrics["accuracy"] = correct / examples
    if fidelity is not None:
        metrics |= fidelity.result()
    name = chosen_metric(metric, metrics.get("output_kind", "logits"), split.has_labels)
    return metrics | {"metric": name, "metric_points": 100 * metrics[name]}


def device_of(model: torch.nn.Module) -> torch.device:
    """Where the model's weights live (CPU for a model without any)."""
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _to(inputs: tuple[torch.Tensor, ...], model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    device = device_of(model)
    return tuple(t.to(device) for t in inputs)


def tensor_sqnr_db(reference: torch.Tensor, approximation: torch.Tensor) -> float:
    reference, approximation = reference.detach().double(), approximation.detach().double()
    return sqnr_db(reference.pow(2).sum().item(), (approximation - reference).pow(2).sum().item())
