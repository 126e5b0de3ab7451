"""Unstructured weight masks that work on exported graph modules and plain modules alike.

The pruned entries are held at exact zero in the parameters themselves: a gradient hook zeroes their gradient (so
clipping and optimizer state see only live weights) and the mask is re-applied before every training step (so
momentum gathered before a weight was pruned cannot revive it). The masks live in an `nn.Module` of buffers that the
training loop checkpoints next to the model, so a resumed job continues with exactly the masks it had.

Why not `torch.nn.utils.parametrize`: any graph rewrite through `torch.fx`'s subgraph rewriter (torchao's
`move_exported_model_to_train/eval`, still the fallback of `compression.modes` for some BatchNorm variants, and
pt2e passes) first deletes every submodule no graph node names, `parametrizations` containers included. Masks
held outside the graph survive any rewrite and leave plain weights (no extra multiply) in the exported program.
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn


def prunable_weights(model: nn.Module, exclude: Iterable[str] = ()) -> dict[str, nn.Parameter]:
    """Conv, linear and embedding weights: parameters named `*weight` with at least two dimensions.

    Matching by name and rank rather than by module type is what makes this work on exported graph modules, where
    the submodule holding `fc.weight` is a plain `nn.Module`, not an `nn.Linear`. BatchNorm/LayerNorm scales and
    biases are 1-d and stay dense (they are few, and zeroing one silences a whole channel).
    """
    patterns = list(exclude)
    return {name: parameter for name, parameter in model.named_parameters()
            if parameter.dim() >= 2 and name.rsplit(".", 1)[-1] == "weight"
            and not any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)}


class WeightMasks(nn.Module):
    """One boolean keep-mask per named weight of `model` (True = live), stored as buffers `mask_0`, `mask_1`, ...
    in the order of `names`."""

    def __init__(self, model: nn.Module, names: Iterable[str]):
        super().__init__()
        parameters = dict(model.named_parameters())
        self.names = list(names)
        self._weights = {name: parameters[name] for name in self.names}
        for index, name in enumerate(self.names):
            self.register_buffer(f"mask_{index}", torch.ones_like(parameters[name], dtype=torch.bool))

    def __getitem__(self, name: str) -> torch.Tensor:
        return getattr(self, f"mask_{self.names.index(name)}")

    def weight(self, name: str) -> nn.Parameter:
        return self._weights[name]

    @torch.no_grad()
    def set(self, keep: dict[str, torch.Tensor]) -> None:
        """Replace the masks and zero the newly pruned weights."""
        for name in self.names:
            self[name].copy_(keep[name])
        self.apply_to_weights()

    @torch.no_grad()
    def apply_to_weights(self) -> None:
        for name in self.names:
            self._weights[name].mul_(self[name])

    @contextmanager
    def held(self) -> Iterator["WeightMasks"]:
        """While inside, pruned weights receive zero gradient."""
        handles = [self._weights[name].register_hook(lambda grad, name=name: grad * self[name])
                   for name in self.names]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()


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


def rank_pruned_first(scores: dict[str, torch.Tensor], masks: WeightMasks) -> dict[str, torch.Tensor]:
    """Scores with already-pruned entries below every live one, so raising the sparsity never revives a weight
    (a live weight can score exactly 0 too, e.g. a dead unit, and a tie would let the sort pick either)."""
    return {name: torch.where(masks[name], score, torch.full_like(score, -1.0)) for name, score in scores.items()}


def magnitude_scores(masks: WeightMasks) -> dict[str, torch.Tensor]:
    """|w| of the masked weights (pruned entries are 0, and `rank_pruned_first` keeps them pruned)."""
    with torch.no_grad():
        return {name: (masks.weight(name) * masks[name]).abs() for name in masks.names}


def lamp_scores(masks: WeightMasks) -> dict[str, torch.Tensor]:
    """LAMP (Lee et al. 2021): w_u^2 / sum of w_v^2 over the weights of the same layer that are at least as large.

    A layer-normalised magnitude: ranked globally it adapts the sparsity per layer, is blind to the per-layer scale
    that BatchNorm makes meaningless, and never empties a layer before the end (every layer's largest weight scores
    exactly 1).
    """
    scores = {}
    with torch.no_grad():
        for name, magnitude in magnitude_scores(masks).items():
            squared = magnitude.flatten().double().pow(2)
            order = torch.argsort(squared)
            sorted_squared = squared[order]
            tail_sums = sorted_squared.flip(0).cumsum(0).flip(0)
            score = torch.zeros_like(squared)
            score[order] = sorted_squared / tail_sums.clamp_min(torch.finfo(torch.float64).tiny)
            scores[name] = score.float().view_as(magnitude)
    return scores


def weight_scores(masks: WeightMasks, criterion: str) -> dict[str, torch.Tensor]:
    """Scores of the trained weights by a data-dependent criterion: 'magnitude' or 'lamp'."""
    if criterion == "lamp":
        return lamp_scores(masks)
    if criterion == "magnitude":
        return magnitude_scores(masks)
    raise ValueError(f"'{criterion}' does not rank trained weights; use 'magnitude' or 'lamp'")


def sparsity_report(model: nn.Module, names: Iterable[str]) -> dict:
    """Per-layer and overall fraction of exact zeros among the named weights, plus parameter counts."""
    parameters = dict(model.named_parameters())
    per_layer, zeros, total = {}, 0, 0
    for name in names:
        weight = parameters[name].detach()
        layer_zeros = int((weight == 0).sum())
        per_layer[name] = round(layer_zeros / weight.numel(), 6)
        zeros += layer_zeros
        total += weight.numel()
    count = sum(p.numel() for p in parameters.values())
    # A layer with no weight left cuts every path through the network (Tanaka et al.'s layer collapse).
    collapsed = [name for name, fraction in per_layer.items() if fraction == 1.0]
    return {"sparsity": round(zeros / total, 6) if total else 0.0, "sparsity_per_layer": per_layer,
            "collapsed_layers": collapsed, "prunable_parameters": total, "pruned_parameters": zeros,
            "parameters": count, "nonzero_parameters": count - zeros}
