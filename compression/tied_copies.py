"""Tied weights of an uploaded program's module, tied again.

A model whose output layer shares the input embedding's table (GPT-2, Llama 3.2, Qwen2.5, Gemma) exports it under
both names, stored once; `ExportedProgram.module()` then registers two parameters over that one storage. A
stage's copy, quantizer or mask parted them, and every stage's program stored the table twice (GPT-2's is 154 MB
in float32, more than the rest of an int8 model), with parameter counts including it twice.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import fx


def shared_groups(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> list[list[str]]:
    """The names of tensors that view the same memory (same storage, offset, shape, strides and dtype: a tied
    table under each of its names), in groups of two or more, in the order given."""
    groups: dict[tuple, list[str]] = {}
    for name, tensor in named_tensors:
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.stride(),
               tensor.dtype)
        groups.setdefault(key, []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def tie_shared_parameters(graph_module: fx.GraphModule) -> list[list[str]]:
    """Make the parameters that view the same memory one parameter under the first of their names, which every op
    that read another one now reads (as a tied model's export has one placeholder for them); returns the groups of
    names tied, the kept name first."""
    tied = shared_groups(graph_module.named_parameters(remove_duplicate=False))
    renamed = {name: names[0] for names in tied for name in names[1:]}
    for name in renamed:
        owner, _, leaf = name.rpartition(".")
        delattr(graph_module.get_submodule(owner) if owner else graph_module, leaf)
    if renamed:
        for node in graph_module.graph.nodes:
            if node.op == "get_attr" and node.target in renamed:
                node.target = renamed[node.target]
        graph_module.recompile()
    return tied
