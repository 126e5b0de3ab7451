"""Tied weights of an uploaded program's module, tied again.

A model whose output layer shares the input embedding's table (GPT-2, Llama 3.2, Qwen2.5, Gemma) exports it under
both names, stored once; `ExportedProgram.module()` then registers two parameters over that one storage. A
stage's copy, quantizer or mask parted them, and every stage's program stored the table twice (GPT-2's is 154 MB
in float32, more than the rest of an int8 model), with parameter counts including it twice.
"""

from __future__ import annotations

from torch import fx, nn


def tie_shared_parameters(graph_module: fx.GraphModule) -> list[list[str]]:
    """Make the parameters that view the same memory (same storage, offset, shape, strides and dtype) one
    parameter under the first of their names, which every op that read another one now reads (as a tied model's
    export has one placeholder for them); returns the groups of names tied, the kept name first."""
    groups: dict[tuple, list[tuple[str, nn.Parameter]]] = {}
    for name, parameter in graph_module.named_parameters(remove_duplicate=False):
        key = (parameter.untyped_storage().data_ptr(), parameter.storage_offset(), tuple(parameter.shape),
               parameter.stride(), parameter.dtype)
        groups.setdefault(key, []).append((name, parameter))
    renamed: dict[str, str] = {}
    tied = []
    for members in groups.values():
        if len(members) < 2:
            continue
        kept = members[0][0]
        for name, _ in members[1:]:
            owner, _, leaf = name.rpartition(".")
            delattr(graph_module.get_submodule(owner) if owner else graph_module, leaf)
            renamed[name] = kept
        tied.append([name for name, _ in members])
    if renamed:
        for node in graph_module.graph.nodes:
            if node.op == "get_attr" and node.target in renamed:
                node.target = renamed[node.target]
        graph_module.recompile()
    return tied
