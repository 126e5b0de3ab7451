"""Names of the operations of an exported graph, as the graph passes compare them."""

from __future__ import annotations

import torch
from torch import fx


def op_name(node: fx.Node) -> str:
    """aten.linear.default -> "linear"; operator.getitem -> "getitem"."""
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    return getattr(packet, "__name__", None) or getattr(target, "__name__", str(target))


def returns_view(target: torch._ops.OpOverload) -> bool:
    """Whether the op returns a view of (aliases) one of its inputs, by its schema (squeeze, view, transpose)."""
    return any(value.alias_info is not None for value in target._schema.returns)
