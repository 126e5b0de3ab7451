"""SynFlow (Tanaka et al. 2020): data-free pruning before training that avoids layer collapse.

Score of a weight: |theta * dR/dtheta| with R = sum(f(1; |theta|)), the network run on an all-ones input with every
parameter and buffer replaced by its absolute value. With all weights positive nothing is cut by ReLU, so in a
network without biases each layer's scores sum to R: the score mass is conserved across layers and a thin layer
is not wiped out just because its weights are small. Pruning happens over many rounds with sparsity growing
exponentially, re-scoring on the masked network each time, which is what lets the conservation protect layers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from compression.context import RunContext
from compression.modes import eval_mode
from compression.prune.masks import WeightMasks, keep_top, rank_pruned_first


class SynflowScorer:
    """Scores SynFlow rounds on a float64, all-positive copy of the model, built once (R is a product over layers
    and overflows float32 in deep networks). `model` itself is never modified. Integer inputs (token ids) keep
    their example values; floating inputs become ones. A model that does not run in float64 (transformers that
    build float32 masks or rotary tables inside the forward) is scored in float32, where its layer norms keep R
    bounded."""

    def __init__(self, model: nn.Module, names: list[str], example_inputs: tuple[torch.Tensor, ...]):
        for dtype in (torch.float64, torch.float32):
            self.linear_model = _positive_copy(model, dtype)
            parameters = dict(self.linear_model.named_parameters())
            self.weights = {name: parameters[name] for name in names}
            self.positive = {name: weight.detach().clone() for name, weight in self.weights.items()}
            self.ones = tuple(torch.ones_like(x[:1], dtype=dtype) if x.is_floating_point() else x[:1]
                              for x in example_inputs)
            try:
                with torch.no_grad():
                    self.linear_model(*self.ones)
                break
            except RuntimeError:
                if dtype == torch.float32:
                    raise
        self.dtype = dtype

    def scores(self, masks: WeightMasks | None = None) -> dict[str, torch.Tensor]:
        """|theta * dR/dtheta| for every named weight, with the pruned entries of `masks` set to zero."""
        with torch.no_grad():
            for name, weight in self.weights.items():
                weight.copy_(self.positive[name] * masks[name] if masks is not None else self.positive[name])
                weight.grad = None
                weight.requires_grad_(True)
        output = self.linear_model(*self.ones)
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        torch.stack([o.sum() for o in outputs]).sum().backward()
        with torch.no_grad():
            # A weight whose value never reaches the output (a dead branch) gets no gradient: score 0.
            return {name: (weight * weight.grad).abs().float() if weight.grad is not None
                    else torch.zeros_like(weight, dtype=torch.float32) for name, weight in self.weights.items()}


def _positive_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of `model` in `dtype` with every floating parameter and buffer replaced by its absolute value, in
    eval mode (BatchNorm must use its absolute running statistics, not those of one all-ones input)."""
    copied = eval_mode(copy.deepcopy(model).to(dtype))
    with torch.no_grad():
        for tensor in list(copied.parameters()) + list(copied.buffers()):
            if tensor.is_floating_point():
                tensor.abs_()
    for parameter in copied.parameters():
        parameter.requires_grad_(False)
    return copied


def synflow_scores(model: nn.Module, names: list[str], example_inputs: tuple[torch.Tensor, ...]) -> dict:
    """One round of SynFlow scores for the named weights of `model` (unpruned)."""
    return SynflowScorer(model, names, example_inputs).scores()


def synflow_prune(model: nn.Module, masks: WeightMasks, sparsity: float, iterations: int,
                  example_inputs: tuple[torch.Tensor, ...], ctx: RunContext) -> None:
    """Iterative SynFlow to `sparsity` over `iterations` rounds (round k reaches 1 - (1 - sparsity)**(k / n)).

    The ranking is global, as in the paper: conservation is what keeps it from collapsing layers.
    """
    scorer = SynflowScorer(model, masks.names, example_inputs)
    for round_index in range(1, iterations + 1):
        round_sparsity = 1.0 - (1.0 - sparsity) ** (round_index / iterations)
        scores = rank_pruned_first(scorer.scores(masks), masks)
        masks.set(keep_top(scores, round_sparsity, "global"))
        ctx.progress("synflow", round_index, iterations, sparsity=round(round_sparsity, 4))
