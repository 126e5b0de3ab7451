"""Dropping branches of a graph whose outputs nothing reads, before a quantizer sees them.

Real checkpoints carry such branches: a BERT encoder used for sentence embeddings still computes its pooler
(Linear -> Tanh) although the model returns the mean-pooled hidden states. They cost time, bytes and, worse,
torchao's x86 quantizer crashes on them (`IndexError` while annotating the unused Tanh). Removing them does not
change any output, so it is done before every quantization and reported: which modules lost code and which
parameters are no longer stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import fx


@dataclass
class DroppedBranches:
    ops: int = 0  # computing nodes removed
    modules: list[str] = field(default_factory=list)  # where the removed ops came from, e.g. "bert.pooler.dense"
    parameters: list[str] = field(default_factory=list)  # tensors no longer read, e.g. "bert.pooler.dense.weight"

    def to_metrics(self) -> dict:
        return {"ops": self.ops, "modules": self.modules, "parameters": self.parameters}


def drop_dead_branches(gm: fx.GraphModule) -> DroppedBranches:
    """Remove from `gm` (in place) every side-effect-free node whose result nothing uses, and the parameters and
    buffers only those nodes read. Assertions and other impure nodes are kept."""
    before = {node: _module_path(node) for node in gm.graph.nodes}
    reads_before = {node.target for node in gm.graph.nodes if node.op == "get_attr"}
    gm.graph.eliminate_dead_code()
    remaining = set(gm.graph.nodes)
    removed = [node for node in before if node not in remaining]
    dropped = DroppedBranches(ops=sum(1 for node in removed if node.op == "call_function"))
    dropped.modules = sorted({before[node] for node in removed if node.op == "call_function" and before[node]})
    reads_after = {node.target for node in gm.graph.nodes if node.op == "get_attr"}
    dropped.parameters = sorted(reads_before - reads_after)
    for attr in dropped.parameters:
        owner, _, leaf = attr.rpartition(".")
        holder = gm.get_submodule(owner) if owner else gm
        if hasattr(holder, leaf):
            delattr(holder, leaf)
    if removed:
        gm.delete_all_unused_submodules()
        gm.recompile()
    return dropped


def _module_path(node: fx.Node) -> str:
    """The innermost module a node was traced from, as a dotted path ("" when unknown)."""
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return ""
    path = next(reversed(stack.values()))[0]
    # Re-exported graphs name paths like "L['self'].bert.pooler"; keep the attribute path users know.
    return path.split("'].", 1)[-1] if path.startswith("L['self']") else path

