"""Reading and writing models as `torch.export` programs (`.pt2`), the one model format of modelpress.

Every program written here keeps the dynamic dimensions of the program it came from (bounded or not, on any
input and any axis: an upload exported with `Dim("batch", min=1, max=1024)` stays so), and a plain module gets a
dynamic batch dimension on every input, so the user's deployment (and the next stage) can run it at any batch size.
"""

from __future__ import annotations

import copy
import io
import os
import tempfile
from pathlib import Path

import sympy
import torch
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import InputKind
from torch.utils._sympy.numbers import int_oo

from compression.archive import DEFAULT_LIMITS, ArchiveLimits
from compression.deflate import deflate_zip
from compression.modes import eval_mode, is_exported, lacks_traced_shapes
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


def drop_debug_metadata(program: ExportedProgram) -> None:
    """Remove each node's `_DEBUG_METADATA`, in place, before the program is serialized."""
    for node in program.graph.nodes:
        for key in _DEBUG_METADATA:
            node.meta.pop(key, None)


def save_program(program: ExportedProgram, path: str | Path) -> Path:
    """Write `program` as a .pt2, its members deflated, without its debugging metadata and with a 2-row example
    batch (the program is changed in place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    drop_debug_metadata(program)
    if program.example_inputs is not None:
        # The archive stores the example batch; two rows document the inputs as well as a whole batch does.
        args, kwargs = program.example_inputs
        program.example_inputs = (tuple(_first_rows(a) for a in args), {k: _first_rows(v) for k, v in kwargs.items()})
    handle, stored = tempfile.mkstemp(dir=path.parent, prefix=".stored-", suffix=".pt2")  # torch wants .pt2
    os.close(handle)
    try:
        torch.export.save(program, stored)
        deflate_zip(stored, path)  # torch stores every member; deflated the graph is a tenth (compression.deflate)
    finally:
        os.unlink(stored)
    return path


def _first_rows(value, rows: int = 2):
    return value[:rows].clone() if isinstance(value, torch.Tensor) and value.dim() and len(value) > rows else value


def input_names(program: ExportedProgram) -> list[str]:
    """Names of the user inputs (not parameters or buffers), in the order `forward` takes them."""
    return [spec.arg.name for spec in program.graph_signature.input_specs if spec.kind == InputKind.USER_INPUT]


def input_dtypes(program: ExportedProgram) -> dict[str, torch.dtype]:
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    return {name: placeholders[name].meta["val"].dtype for name in input_names(program)}


def input_shapes(program: ExportedProgram) -> dict[str, list[int | None]]:
    """Each user input's shape, None for a dynamic dimension."""
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    return {name: [d if isinstance(d, int) else None for d in placeholders[name].meta["val"].shape]
            for name in input_names(program)}


def export_model(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                 draft: bool = False) -> ExportedProgram:
    """Export `model` (plain or already exported) with the dynamic shapes of `dynamic_shapes_of(model)`
    (`draft`: with torch.export.draft_export, see `export_branching_model`).

    The model must be in the mode it should be exported in (normally eval). A batch of one is tiled to two:
    torch.export specialises a dimension of size 1 to a constant.
    """
    example_inputs = tuple(example_inputs)
    if example_inputs[0].shape[0] < 2:
        example_inputs = inputs_at_batch(example_inputs, 2)
    dynamic_shapes = dynamic_shapes_of(model, len(example_inputs))
    example_inputs = _within_bounds(example_inputs, dynamic_shapes)
    export = torch.export.draft_export if draft else torch.export.export
    program = export(model, example_inputs, dynamic_shapes=dynamic_shapes)
    _keep_ranges_on_inputs(program)
    return program


def exported_copy(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> torch.fx.GraphModule:
    """`model` as an exported graph module of its own, to rewrite in place, reading the same tensors as `model`
    (as an export's module does: rewrites replace a tensor, never write into one). A program's module that no
    stage rewrote by hand (every call carries its traced output) has its graph and modules copied: exporting it
    again gives the same graph and costs one to five seconds, twice per int8 stage (the job's dry run prepares the
    quantizer too), and copying its weights would double the memory a large model takes while it is prepared.
    The model must be in the mode it should be exported in (normally eval)."""
    if is_exported(model) and not lacks_traced_shapes(model):
        shared = {id(tensor): tensor for module in model.modules() for tensor in
                  (*module._parameters.values(), *module._buffers.values(), *vars(module).values())
                  if isinstance(tensor, torch.Tensor)}
        return copy.deepcopy(model, shared)
    return export_model(model, example_inputs).module()


def export_branching_model(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> ExportedProgram:
    """`export_model`, or for a forward that branches on its data (Longformer's and LED's `.any().item()` switch
    for global attention, which no `input_ids`/`attention_mask` input turns on) torch.export.draft_export: it
    takes the branch the example takes and asserts at run time that later inputs take it too, so an input that
    would not fails loudly instead of computing the other branch's function. Only data-dependent decisions are
    taken from the draft; any other issue it reports raises."""
    from torch.export._draft_export import FailureType
    from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

    try:
        return export_model(model, example_inputs)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is a data-dependent guard
        cause = exc
        while cause is not None and not isinstance(cause, GuardOnDataDependentSymNode):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        failed = exc
    program = export_model(model, example_inputs, draft=True)
    other = [f.failure_type.name for f in program._report.failures
             if f.failure_type != FailureType.DATA_DEPENDENT_ERROR]
    if other:
        raise ValueError(f"draft export found more than data-dependent branches ({other})") from failed
    return program


def _keep_ranges_on_inputs(program: ExportedProgram) -> None:
    """Give the symbols of the graph's input shapes the ranges the program promises (`range_constraints`).

    While tracing, export keeps a lower bound of 2 on every dynamic dim (1 would specialise) and reports the
    user's bound (e.g. 1) only in `range_constraints`; `.module()` graphs carry the traced range, so the next
    re-export would raise the minimum batch to 2 and refuse batch 1."""
    for node in program.graph.nodes:
        value = node.meta.get("val") if node.op == "placeholder" else None
        if not isinstance(value, torch.Tensor):
            continue
        for size in value.shape:
            if isinstance(size, torch.SymInt) and size.node.expr in program.range_constraints:
                size.node.shape_env.var_to_range[size.node.expr] = program.range_constraints[size.node.expr]


def batch_bound(program: ExportedProgram) -> int | None:
    """The largest batch the program accepts (an upload exported with `Dim("batch", max=64)` refuses 65 rows with
    a guard's AssertionError), or None when its batch is unbounded or static."""
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    bounds = []
    for name in input_names(program):
        value = placeholders[name].meta.get("val")
        size = value.shape[0] if isinstance(value, torch.Tensor) and value.dim() else None
        if isinstance(size, torch.SymInt) and size.node.expr in program.range_constraints:
            bounds.append(_bound(program.range_constraints[size.node.expr].upper))
    bounds = [bound for bound in bounds if bound is not None]
    return min(bounds) if bounds else None


def dynamic_shapes_of(model: torch.nn.Module, input_count: int) -> tuple[dict[int, Dim], ...]:
    """The `dynamic_shapes` that re-export `model` as it was exported: one `Dim` per symbol of its inputs' shapes
    with the symbol's range (so `Dim("batch", min=1, max=1024)` stays bounded and a symbol shared by two inputs
    stays shared), static dims static. Each dim is named after where it first appears ("batch" for axis 0).

    A module that is not an exported graph (or whose inputs carry no shapes) gets one unbounded batch dimension
    shared by all `input_count` inputs, the convention of this library."""
    shapes = _placeholder_shapes(model)
    if shapes is None or len(shapes) != input_count:
        batch = Dim("batch")
        return tuple({0: batch} for _ in range(input_count))
    dims: dict[str, Dim] = {}
    result = []
    for input_name, shape in shapes:
        spec = {}
        for axis, size in enumerate(shape):
            if not isinstance(size, torch.SymInt):
                continue
            symbol = size.node.expr
            if not symbol.is_Symbol:
                spec[axis] = Dim.AUTO  # derived (e.g. 2 * seq): export infers it from the symbols it depends on
                continue
            if str(symbol) not in dims:
                name = "batch" if axis == 0 and not any(d.__name__ == "batch" for d in dims.values()) \
                    else f"{input_name}_{axis}"
                dims[str(symbol)] = _dim(name, size.node.shape_env.var_to_range.get(symbol))
            spec[axis] = dims[str(symbol)]
        result.append(spec)
    return tuple(result)


def _placeholder_shapes(model: torch.nn.Module) -> list[tuple[str, tuple]] | None:
    if not isinstance(model, torch.fx.GraphModule):
        return None
    shapes = []
    for node in model.graph.nodes:
        if node.op != "placeholder":
            continue
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor):
            return None
        shapes.append((node.name, tuple(value.shape)))
    return shapes


def _dim(name: str, value_range) -> Dim:
    if value_range is None:
        return Dim(name)
    return Dim(name, min=_bound(value_range.lower), max=_bound(value_range.upper))


def _bound(value) -> int | None:
    """A range end as an int; None for an unbounded end (sympy's and torch's infinities)."""
    return None if value in (int_oo, -int_oo, sympy.oo, -sympy.oo) else int(value)


def _within_bounds(example_inputs: tuple[torch.Tensor, ...], dynamic_shapes) -> tuple[torch.Tensor, ...]:
    """Cut the example batch to the program's largest allowed batch (an export outside the range fails)."""
    limits = [getattr(spec.get(0), "max", None) for spec in dynamic_shapes]
    limits = [limit for limit in limits if isinstance(limit, int)]
    if limits and example_inputs[0].shape[0] > min(limits):
        return inputs_at_batch(example_inputs, min(limits))
    return example_inputs


def inputs_at_batch(example_inputs: tuple[torch.Tensor, ...], batch_size: int) -> tuple[torch.Tensor, ...]:
    """`example_inputs` cut or tiled along dim 0 to exactly `batch_size` rows (for timing and export)."""
    resized = []
    for tensor in example_inputs:
        repeats = -(-batch_size // tensor.shape[0])
        resized.append(tensor.repeat(repeats, *([1] * (tensor.dim() - 1)))[:batch_size].contiguous())
    return tuple(resized)
