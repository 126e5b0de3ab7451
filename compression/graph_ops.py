"""Names of the operations of an exported graph, as the graph passes compare them."""

from __future__ import annotations

from torch import fx


def op_name(node: fx.Node) -> str:
    """aten.linear.default -> "linear"; operator.getitem -> "getitem"."""
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    return getattr(packet, "__name__", None) or getattr(target, "__name__", str(target))
