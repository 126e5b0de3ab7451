"""Quality of a model on a split: accuracy when the split has labels, fidelity to a reference model otherwise.

Fidelity compares the outputs of the model and of the uncompressed reference on the same inputs, in the way the
output kind is used (`compression.fidelity`; the kind is declared, or detected by `compression.output_kind`).
One of the numbers is the job's metric (`compression.specs.metrics`): it is also given in points, which
`metric_drop` and the budgets compare.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Sequence

import torch

from compression.data import Split
from compression.fidelity import Fidelity, sqnr_db
from compression.labels import LabelScore
from compression.modes import evaluating
from compression.output_kind import detect_output_kind
from compression.specs.metrics import chosen_metric

TOKEN_MASK_INPUT = "attention_mask"


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
             metric: str | None = None, expected: Sequence[torch.Tensor] | None = None,
             run: Callable[..., object] | None = None, keep_outputs: KeptOutputs | None = None) -> dict:
    """{"samples", and with labels (`compression.labels.LabelScore`) "accuracy", the fraction of labels the output
    agrees with, or for a split labelled with values "label_spearman" and "label_mse"}, plus the fidelity metrics
    of the output kind vs `reference`, plus {"metric": its name, "metric_points": its value in points}.

    `output_kind` None detects it from the reference's first batch; `metric` None picks accuracy with labels, else
    the output kind's default. Without labels a reference is required. Both models run in eval mode without
    autograd, each on the device that holds its weights; their previous modes are restored afterwards, so this can
    be called in the middle of training.

    `expected`: the reference's outputs, one tensor per batch of `split.evaluation_batches(batch_size, max_samples)`
    (`outputs_of`), computed once and used instead of running `reference` again. `run`: what runs `model` on a
    batch's inputs (e.g. its compiled form; default: the model itself). `keep_outputs`: receives the model's outputs,
    one tensor per batch (what `expected` takes).
    """
    if not split.has_labels and reference is None and expected is None:
        raise ValueError(f"split '{split.name}' has no labels: pass the reference model to measure fidelity")
    if reference is None and expected is None and metric not in (None, "accuracy"):
        raise ValueError(f"metric '{metric}' compares with a reference model: pass it")
    if reference is None and expected is not None and output_kind is None:
        raise ValueError("fidelity to stored reference outputs needs the output kind")
    run = run or model
    examples = 0
    # A split labelled with values is a regression model's, whatever kind the caller detected.
    label_kind = "regression" if split.label_values else output_kind
    labels: LabelScore | None = None
    index = -1
    fidelity: Fidelity | None = None
    compare = reference is not None or expected is not None
    # Token outputs are compared on the real tokens of a model fed an attention mask (compression.fidelity).
    mask_at = list(split.inputs).index(TOKEN_MASK_INPUT) if TOKEN_MASK_INPUT in split.inputs else None
    with evaluating(model), (evaluating(reference) if reference is not None else nullcontext()):
        for index, batch in enumerate(split.evaluation_batches(batch_size, limit=max_samples)):
            outputs = output_tensor(run(*_to(batch.inputs, model))).float().cpu()
            examples += len(batch)
            if keep_outputs is not None:
                keep_outputs.add(outputs)
            if batch.labels is not None:
                # Thresholds of binary labels depend on the kind (a probability's 0.5, a logit's 0).
                label_kind = label_kind or detect_output_kind(reference if reference is not None else model, outputs)
                labels = labels or LabelScore(label_kind)
                labels.add(outputs, batch.labels)
            if compare:
                # A model compared with itself (an unlabelled upload's baseline) runs once, not twice.
                if expected is not None:
                    if index >= len(expected) or len(expected[index]) != len(batch):
                        raise ValueError(f"the stored reference outputs do not match batch {index} of split "
                                         f"'{split.name}' ({len(batch)} examples)")
                    reference_output = expected[index]
                elif reference is model:
                    reference_output = outputs
                else:
                    reference_output = output_tensor(reference(*_to(batch.inputs, reference))).float().cpu()
                if fidelity is None:
                    fidelity = Fidelity(output_kind or detect_output_kind(reference, reference_output))
                fidelity.add(outputs, reference_output,
                             batch.inputs[mask_at] if mask_at is not None else None)
    if expected is not None and len(expected) != index + 1:
        raise ValueError(f"{len(expected)} stored reference batches for {index + 1} batches of split '{split.name}'")
    metrics = {"samples": examples}
    if labels is not None:
        metrics |= labels.result()
    if fidelity is not None:
        metrics |= fidelity.result()
    name = chosen_metric(metric, "regression" if split.label_values else metrics.get("output_kind", "logits"),
                         split.has_labels)
    if name not in metrics:  # a rank correlation of single scores, for a model with several outputs
        raise ValueError(f"metric '{name}' was not measured on this model's output (score_spearman needs one score "
                         f"per example, [batch] or [batch, 1], and 3 examples); choose another evaluation.metric")
    return metrics | {"metric": name, "metric_points": 100 * metrics[name]}


class KeptOutputs:
    """A model's outputs kept batch by batch (what `evaluate` takes as `expected`), up to `max_bytes`: past that
    nothing is kept (`batches` becomes None) and the caller runs the model again instead of holding, say,
    gigabytes of a language model's logits."""

    def __init__(self, max_bytes: int):
        self.max_bytes, self.bytes = max_bytes, 0
        self.batches: list[torch.Tensor] | None = []

    def add(self, output: torch.Tensor) -> None:
        if self.batches is None:
            return
        self.bytes += output.numel() * output.element_size()
        if self.bytes > self.max_bytes:
            self.batches = None
        else:
            self.batches.append(output)


def outputs_of(model: torch.nn.Module, split: Split, keep: KeptOutputs, batch_size: int = 256,
               max_samples: int | None = None, run: Callable[..., object] | None = None) -> KeptOutputs:
    """The model's main output (float, on the CPU) for each batch `evaluate` reads with the same settings, into
    `keep` (it stops early once they outgrow it): the upload's outputs, kept so that every stage's fidelity
    compares with them without running the upload again."""
    run = run or model
    with evaluating(model):
        for batch in split.evaluation_batches(batch_size, limit=max_samples):
            keep.add(output_tensor(run(*_to(batch.inputs, model))).float().cpu())
            if keep.batches is None:
                break
    return keep


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
