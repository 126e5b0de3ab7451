"""Reading and writing models as `torch.export` programs (`.pt2`), the one model format of modelpress.

Every program written here has a dynamic batch dimension on every input, so the user's deployment (and the next
stage) can run it at any batch size.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import InputKind

from compression.archive import DEFAULT_LIMITS, ArchiveLimits
from compression.modes import eval_mode
from compression.program_loader import load_checked_program


def load_program(path: str | Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> ExportedProgram:
    """The program at `path`, read under every archive rule (`compression.archive`): a hostile or malformed file
    raises InvalidUpload naming the offending entry, and nothing in it is unpickled or executed."""
    return load_checked_program(Path(path), limits)


def load_program_bytes(data: bytes, limits: ArchiveLimits = DEFAULT_LIMITS) -> ExportedProgram:
    """`load_program` for a .pt2 held in memory (the graph inside the packed formats)."""
    return load_checked_program(io.BytesIO(data), limits)


def load_model(path: str | Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> torch.nn.Module:
    """The program at `path` as a runnable module, in eval mode."""
    return eval_mode(load_program(path, limits).module())


# Node provenance the archive would otherwise carry: where each node was traced from (re-exports add a
# `from_node` chain per node) and the Python stack. Neither affects running the program, and on small models they
# were a fifth of the int8 file.
_DEBUG_METADATA = ("from_node", "stack_trace")


def save_program(program: ExportedProgram, path: str | Path) -> Path:
    """Write `program` as a .pt2 without its debugging metadata and with a 2-row example batch (the program is
    changed in place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for node in program.graph.nodes:
        for key in _DEBUG_METADATA:
            node.meta.pop(key, None)
    if program.example_inputs is not None:
        # The archive stores the example batch; two rows document the inputs as well as a whole batch does.
        args, kwargs = program.example_inputs
        program.example_inputs = (tuple(_first_rows(a) for a in args), {k: _first_rows(v) for k, v in kwargs.items()})
    torch.export.save(program, str(path))
    return path


def _first_rows(value, rows: int = 2):
    return value[:rows].clone() if isinstance(value, torch.Tensor) and value.dim() and len(value) > rows else value


def input_names(program: ExportedProgram) -> list[str]:
    """Names of the user inputs (not parameters or buffers), in the order `forward` takes them."""
    return [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]


def input_dtypes(program: ExportedProgram) -> dict[str, torch.dtype]:
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    return {name: placeholders[name].meta["val"].dtype for name in input_names(program)}


def export_model(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> ExportedProgram:
    """Export `model` (plain or already exported) with one dynamic batch dimension shared by all its inputs.

    The model must be in the mode it should be exported in (normally eval). A batch of one is tiled to two:
    torch.export specialises a dimension of size 1 to a constant.
    """
    example_inputs = tuple(example_inputs)
    if example_inputs[0].shape[0] < 2:
        example_inputs = inputs_at_batch(example_inputs, 2)
    batch = Dim("batch")
    dynamic_shapes = tuple({0: batch} for _ in example_inputs)
    return torch.export.export(model, example_inputs, dynamic_shapes=dynamic_shapes)


def inputs_at_batch(example_inputs: tuple[torch.Tensor, ...], batch_size: int) -> tuple[torch.Tensor, ...]:
    """`example_inputs` cut or tiled along dim 0 to exactly `batch_size` rows (for timing and export)."""
    resized = []
    for tensor in example_inputs:
        repeats = -(-batch_size // tensor.shape[0])
        resized.append(tensor.repeat(repeats, *([1] * (tensor.dim() - 1)))[:batch_size].contiguous())
    return tuple(resized)
