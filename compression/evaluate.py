"""Quality of a model on a split: accuracy when the split has labels, fidelity to a reference model otherwise.

Fidelity compares outputs (logits) of the model and of the uncompressed reference on the same inputs:
top-1 agreement, mean per-example cosine similarity, mean squared error and SQNR in dB
(10 log10(sum ref^2 / sum (out - ref)^2), the usual measure of quantization error).
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch

from compression.data import Split
from compression.modes import evaluating


def output_tensor(output) -> torch.Tensor:
    """The logits of a model output: the tensor itself, or the first tensor of a tuple/list/dict output."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)) and output:
        return output_tensor(output[0])
    raise TypeError(f"cannot read logits from a model output of type {type(output).__name__}")


def evaluate(model: torch.nn.Module, split: Split, reference: torch.nn.Module | None = None,
             batch_size: int = 256, max_samples: int | None = None) -> dict:
    """{"accuracy"} when `split` has labels, plus {"top1_agreement", "cosine", "mse", "sqnr_db"} vs `reference`.

    Without labels a reference is required. Both models run in eval mode without autograd, each on the device
    that holds its weights; their previous modes are restored afterwards, so this can be called in the middle
    of training.
    """
    if not split.has_labels and reference is None:
        raise ValueError(f"split '{split.name}' has no labels: pass the reference model to measure fidelity")
    correct = agree = examples = 0
    cosine_sum = squared_error = reference_energy = 0.0
    with evaluating(model), (evaluating(reference) if reference is not None else nullcontext()):
        for batch in split.batches(batch_size, limit=max_samples):
            logits = output_tensor(model(*_to(batch.inputs, model))).float().cpu()
            examples += len(batch)
            if batch.labels is not None:
                correct += (logits.argmax(-1) == batch.labels).sum().item()
            if reference is not None:
                # A model compared with itself (an unlabelled upload's baseline) runs once, not twice.
                expected = logits if reference is model else output_tensor(
                    reference(*_to(batch.inputs, reference))).float().cpu()
                agree += (logits.argmax(-1) == expected.argmax(-1)).sum().item()
                flat, flat_expected = logits.reshape(len(batch), -1), expected.reshape(len(batch), -1)
                cosine_sum += torch.nn.functional.cosine_similarity(flat, flat_expected, dim=1).sum().item()
                squared_error += (flat - flat_expected).pow(2).sum().item()
                reference_energy += flat_expected.pow(2).sum().item()
    metrics = {"samples": examples}
    if split.has_labels:
        metrics["accuracy"] = correct / examples
    if reference is not None:
        elements = examples * flat.shape[1]
        metrics |= {"top1_agreement": agree / examples, "cosine": cosine_sum / examples,
                    "mse": squared_error / elements, "sqnr_db": sqnr_db(reference_energy, squared_error)}
    return metrics


def device_of(model: torch.nn.Module) -> torch.device:
    """Where the model's weights live (CPU for a model without any)."""
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _to(inputs: tuple[torch.Tensor, ...], model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    device = device_of(model)
    return tuple(t.to(device) for t in inputs)


def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    """Signal-to-quantization-noise ratio in dB; capped at 200 dB for an exact match (JSON has no infinity)."""
    if noise_energy <= signal_energy * 1e-20:
        return 200.0
    return 10 * math.log10(signal_energy / noise_energy)


def tensor_sqnr_db(reference: torch.Tensor, approximation: torch.Tensor) -> float:
    reference, approximation = reference.detach().double(), approximation.detach().double()
    return sqnr_db(reference.pow(2).sum().item(), (approximation - reference).pow(2).sum().item())
