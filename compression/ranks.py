"""Spearman's rank correlation: how fidelity compares scores and similarities, and how a regression model's outputs
are scored against the values it is labelled with."""

from __future__ import annotations

import torch


def spearman(values: torch.Tensor, reference: torch.Tensor) -> float:
    """Spearman's rank correlation of two series of the same items (values rounded to 9 decimals, so that equal
    ones tie instead of being ranked by rounding noise); 0.0 when either is constant, which ranks nothing (e.g. a
    collapsed model mapping everything to one output)."""
    ranks = _ranks(torch.round(values.double(), decimals=9))
    reference_ranks = _ranks(torch.round(reference.double(), decimals=9))
    ranks, reference_ranks = ranks - ranks.mean(), reference_ranks - reference_ranks.mean()
    denominator = (ranks.norm() * reference_ranks.norm()).item()
    return (ranks @ reference_ranks).item() / denominator if denominator > 0 else 0.0


def column_spearman(values: torch.Tensor, reference: torch.Tensor) -> float:
    """The mean over columns of `spearman` of [n, K] values against [n, K] references: each target of a model with
    several is ranked on its own scale (one column: plain `spearman`)."""
    values, reference = values.reshape(len(values), -1), reference.reshape(len(reference), -1)
    if values.shape != reference.shape:
        raise ValueError(f"cannot rank {list(values.shape)} values against {list(reference.shape)} references")
    return sum(spearman(values[:, column], reference[:, column]) for column in range(values.shape[1])) \
        / values.shape[1]


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions), as Spearman's coefficient defines them."""
    unique, inverse, counts = torch.unique(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return ((ends - (counts.double() - 1) / 2))[inverse]
