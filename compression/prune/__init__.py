"""Pruning: unstructured (magnitude or SynFlow, one-shot, gradual or lottery-ticket rewinding, stored as bitmask +
values) and structured (whole conv channels / linear units removed from the exported graph)."""

from compression.prune.apply import apply_prune
from compression.prune.sparse_format import load_sparse, save_sparse

__all__ = ["apply_prune", "load_sparse", "save_sparse"]
