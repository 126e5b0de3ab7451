"""Unstructured weight masks held as `torch.nn.utils.parametrize` parametrizations.

A masked weight is computed as `original * mask` on every forward, so the zeros survive any optimizer step (the
masked entries get zero gradient and are never read) and the mask travels in the model's state_dict (training
checkpoints resume with it). This works on `torch.export` graph modules, whose conv/linear weights are attributes
of plain submodules read by `get_attr` nodes, as well as on ordinary modules.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize


class WeightMask(nn.Module):
    """Parametrization `w -> w * mask`; the mask is a buffer so that it is saved and restored with the model."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def prunable_weights(model: nn.Module, exclude: Iterable[str] = ()) -> dict[str, nn.Parameter]:
    """Conv, linear and embedding weights: parameters named `*weight` with at least two dimensions.

    Matching by name and rank rather than by module type is what makes this work on exported graph modules, where
    the submodule holding `fc.weight` is a plain `nn.Module`, not an `nn.Linear`. BatchNorm/LayerNorm scales and
    biases are 1-d and stay dense (they are few and pruning them removes whole channels).
    """
    patterns = list(exclude)
    weights = {}
    for name, parameter in _named_weights(model):
        if parameter.dim() >= 2 and name.rsplit(".", 1)[-1] == "weight":
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                weights[name] = parameter
    return weights


def _named_weights(model: nn.Module):
    """(name, tensor) of every weight, seeing through parametrizations (their `original` is the trainable one)."""
    for module_name, module in model.named_modules():
        if isinstance(module, parametrize.ParametrizationList):
            continue
        for attr, parameter in module.named_parameters(recurse=False):
            yield _join(module_name, attr), parameter
        if parametrize.is_parametrized(module):
            for attr, parametrizations in module.parametrizations.items():
                yield _join(module_name, attr), parametrizations.original


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    module_name, _, attr = name.rpartition(".")
    return (model.get_submodule(module_name) if module_name else model), attr


def attach_masks(model: nn.Module, names: Iterable[str]) -> dict[str, WeightMask]:
    """Parametrize each named weight with an all-ones mask (idempotent) and return the masks by weight name."""
    masks = {}
    for name in names:
        module, attr = _owner(model, name)
        if parametrize.is_parametrized(module, attr):
            existing = [p for p in module.parametrizations[attr] if isinstance(p, WeightMask)]
            if existing:
                masks[name] = existing[0]
                continue
        mask = WeightMask(getattr(module, attr))
        parametrize.register_parametrization(module, attr, mask, unsafe=True)
        masks[name] = mask
    return masks


def find_masks(model: nn.Module) -> dict[str, WeightMask]:
    masks = {}
    for module_name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            for attr, parametrizations in module.parametrizations.items():
                for parametrization in parametrizations:
                    if isinstance(parametrization, WeightMask):
                        masks[_join(module_name, attr)] = parametrization
    return masks


def bake_masks(model: nn.Module) -> None:
    """Remove the mask parametrizations, leaving plain parameters that hold exact zeros where pruned."""
    for name in list(find_masks(model)):
        module, attr = _owner(model, name)
        parametrize.remove_parametrizations(module, attr, leave_parametrized=True)


def effective_weight(model: nn.Module, name: str) -> torch.Tensor:
    module, attr = _owner(model, name)
    return getattr(module, attr)


def keep_top(scores: dict[str, torch.Tensor], sparsity: float, scope: str) -> dict[str, torch.Tensor]:
    """Boolean keep-masks that zero exactly round(sparsity * n) of the lowest-scored entries.

    Ranking (not a threshold on the score value) makes the count exact even when scores tie, e.g. many weights
    that are already zero. `scope="global"` ranks all tensors together; `"layerwise"` ranks each tensor alone.
    """
    if scope == "layerwise":
        return {name: _keep_top_flat(score.flatten(), sparsity).view_as(score) for name, score in scores.items()}
    if scope != "global":
        raise ValueError(f"unknown pruning scope '{scope}'")
    flat = torch.cat([score.detach().flatten().float() for score in scores.values()])
    keep = _keep_top_flat(flat, sparsity)
    masks, offset = {}, 0
    for name, score in scores.items():
        masks[name] = keep[offset:offset + score.numel()].view_as(score)
        offset += score.numel()
    return masks


def _keep_top_flat(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    pruned = int(round(sparsity * scores.numel()))
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if pruned:
        # A stable sort breaks ties by position, so the chosen set is deterministic.
        order = torch.sort(scores.detach().float(), stable=True).indices
        keep[order[:pruned]] = False
    return keep


def rank_pruned_first(scores: dict[str, torch.Tensor], masks: dict[str, WeightMask]) -> dict[str, torch.Tensor]:
    """Scores with already-pruned entries below every live one, so raising the sparsity never revives a weight
    (a live weight can score exactly 0 too, e.g. a dead unit, and a tie would let the sort pick either)."""
    return {name: torch.where(masks[name].mask, score, torch.full_like(score, -1.0)) if name in masks else score
            for name, score in scores.items()}


def set_masks(masks: dict[str, WeightMask], keep: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, mask in masks.items():
            mask.mask.copy_(keep[name])


def magnitude_scores(model: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """|w| of the effective (already masked) weight, so that pruned weights stay pruned as sparsity grows."""
    with torch.no_grad():
        return {name: effective_weight(model, name).abs() for name in names}


def sparsity_report(model: nn.Module, names: Iterable[str]) -> dict:
    """Per-layer and overall fraction of exact zeros among the given weights, plus parameter counts."""
    per_layer, zeros, total = {}, 0, 0
    with torch.no_grad():
        for name in names:
            weight = effective_weight(model, name)
            layer_zeros = int((weight == 0).sum())
            per_layer[name] = round(layer_zeros / weight.numel(), 6)
            zeros += layer_zeros
            total += weight.numel()
        parameters = sum(p.numel() for _, p in _named_weights(model))
    return {"sparsity": round(zeros / total, 6) if total else 0.0, "sparsity_per_layer": per_layer,
            "prunable_parameters": total, "pruned_parameters": zeros, "parameters": parameters, "nonzero_parameters": parameters - zeros}
