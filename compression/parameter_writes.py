"""Which parameters a program writes to each time it runs.

A program that changes its own weights computes something different on every call, and every method fails on it
in its own way (calibration sees moving weights; training stops at "a leaf Variable that requires grad is being
used in an in-place operation"). Export records such a write as an in-place op kept in the graph (a `mul_` under
`no_grad`, as RWKV's first call in eval mode does; export wraps a `no_grad` region in a higher-order op whose own
graph holds the write), possibly on a view of the parameter, or, in a training-IR program, as a parameter
mutation in the graph signature.
"""

from __future__ import annotations

import torch
from torch import fx
from torch.utils import _pytree

# Ops the schema marks as aliasing their input that return a copy when they must (another dtype, a layout a view
# cannot give): a write to their result is not taken for a write to the input.
_MAY_COPY = {"aten::to", "aten::reshape", "aten::contiguous", "aten::type_as"}


def written_parameters(program: torch.export.ExportedProgram) -> list[str]:
    """The names of the parameters `program` writes to; [] for a program that only reads them."""
    signature = program.graph_signature
    placeholders = [node.name for node in program.graph.nodes if node.op == "placeholder"]
    written = list(signature.parameters_to_mutate.values())
    for index in sorted(_written_inputs(program.graph_module)):
        if (parameter := signature.inputs_to_parameters.get(placeholders[index])) is not None:
            written.append(parameter)
    return list(dict.fromkeys(written))


def _written_inputs(graph_module: fx.GraphModule) -> set[int]:
    """Positions of the placeholders of `graph_module` that it writes to in place, directly, through a view, or
    in the graph of a higher-order op it calls (whose placeholders are that op's tensor operands, in order)."""
    placeholders = [node for node in graph_module.graph.nodes if node.op == "placeholder"]
    aliases = {node: index for index, node in enumerate(placeholders)}  # node -> the input it is a view of
    written: set[int] = set()
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        schema = getattr(node.target, "_schema", None)
        if schema is not None:
            for argument, value in zip(schema.arguments, node.args):
                if not isinstance(value, fx.Node) or value not in aliases or argument.alias_info is None:
                    continue
                if argument.alias_info.is_write:
                    written.add(aliases[value])
                elif schema.name not in _MAY_COPY:
                    aliases[node] = aliases[value]
            continue
        graphs = [getattr(graph_module, arg.target) for arg in node.args
                  if isinstance(arg, fx.Node) and arg.op == "get_attr"
                  and isinstance(getattr(graph_module, arg.target, None), fx.GraphModule)]
        operands = [arg for arg in _pytree.tree_leaves(node.args) if isinstance(arg, fx.Node) and arg.op != "get_attr"]
        for graph in graphs:
            written |= {aliases[operands[index]] for index in _written_inputs(graph)
                        if index < len(operands) and operands[index] in aliases}
    return written
