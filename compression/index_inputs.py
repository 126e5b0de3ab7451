"""Integer inputs that index an embedding table (token ids) must lie inside it.

An id past the table (or negative) makes `aten.embedding` raise a bare IndexError ("index out of range in self")
in whichever phase first reads that row, possibly minutes into a job. The tables' sizes are in the program and
the ids in the dataset, so the job checks them when it loads, before the dry run, and says which input and
which ids are wrong.
"""

from __future__ import annotations

import torch
from torch.export import ExportedProgram

from compression.archive.errors import InvalidUpload

# Ops that pass an integer tensor's values on unchanged (reshaped, cast or sliced) on the way to an embedding.
_VALUE_PRESERVING = {"view", "reshape", "_to_copy", "to", "clone", "contiguous", "unsqueeze", "squeeze", "flatten",
                     "slice", "select", "expand", "_assert_tensor_metadata", "alias"}


def embedding_rows(program: ExportedProgram, input_names: list[str]) -> dict[str, int]:
    """Model input -> the rows of the smallest embedding table it indexes (inputs that index none are left out)."""
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    rows: dict[str, int] = {}
    for name in input_names:
        pending, seen = [placeholders[name]] if name in placeholders else [], set()
        while pending:
            node = pending.pop()
            if node in seen:
                continue
            seen.add(node)
            for user in node.users:
                op = getattr(getattr(user.target, "_schema", None), "name", "").removeprefix("aten::")
                if op == "embedding" and len(user.args) > 1 and user.args[1] is node:
                    weight = user.args[0].meta.get("val")
                    if isinstance(weight, torch.Tensor):
                        rows[name] = min(rows.get(name, weight.shape[0]), int(weight.shape[0]))
                elif op in _VALUE_PRESERVING:
                    pending.append(user)
    return rows


def check_index_ranges(splits, rows: dict[str, int]) -> None:
    """Raise InvalidUpload naming the split and input whose ids fall outside the table they index.

    `splits`: `compression.data.Split`s, whose `inputs` map model input names to arrays."""
    for split in splits:
        for name, table in rows.items():
            array = split.inputs.get(name)
            if array is None or array.dtype.kind not in "iu" or not array.size:
                continue
            low, high = int(array.min()), int(array.max())
            if low < 0 or high >= table:
                raise InvalidUpload(f"split '{split.name}': input '{name}' holds ids in [{low}, {high}] but it "
                                    f"indexes an embedding table of {table} rows (ids 0..{table - 1}); check the "
                                    "tokenizer matches the model's vocabulary")
