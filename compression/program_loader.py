"""Loading a `.pt2` so that torch never reads the archive itself.

`torch.export.load` would open the zip with its own reader, unpickle (`weights_only=False` fallbacks, custom and
opaque objects), open AOTInductor libraries, and fall back to a legacy format when anything fails. Instead the
archive is read and checked by `compression.archive` (every rule, torch-free), and only its checked parts reach
torch: the parsed program description, tensors built here from the raw weight bytes, and the example inputs
loaded here with `torch.load(weights_only=True)`; torch's deserializer then builds the program from these
objects, so its fallback can never trigger. The operators the program calls are also resolved here and must be
real operator overloads of the allowed namespaces (or the listed higher-order and symbolic functions).
"""

from __future__ import annotations

import functools
import importlib
import io
import math
import operator
import warnings
from pathlib import Path
from typing import BinaryIO

import torch
from torch._export.serde import schema
from torch._export.serde.serialize import _SERIALIZE_TO_TORCH_DTYPE, ExportedProgramDeserializer, _dict_to_dataclass
from torch.export import ExportedProgram

from compression.archive import DEFAULT_LIMITS, ArchiveLimits, InvalidUpload
from compression.archive.payloads import Payload
from compression.archive.program_rules import (
    HIGHER_ORDER_OPERATORS,
    OPERATOR_NAMESPACES,
    PYTHON_OPERATORS,
    called_operators,
)
from compression.archive.pt2 import CONSTANTS_DIR, MODEL_JSON, SAMPLE_INPUTS, WEIGHTS_DIR, Pt2Archive, read_pt2
from compression.parameter_writes import written_parameters
from compression.positional_inputs import make_inputs_positional
from compression.program_device import retarget_devices

_PYTHON_MODULES = {"_operator": operator, "math": math, "torch": torch}


def load_checked_program(source: str | Path | BinaryIO, limits: ArchiveLimits = DEFAULT_LIMITS) -> ExportedProgram:
    """The program in `source` (a path or a seekable binary file), refused with InvalidUpload unless every rule
    of `compression.archive` holds."""
    archive = read_pt2(source, limits, keep_payloads=True)
    where = f"{archive.root}/{MODEL_JSON}"
    _register_operators()
    for target in sorted(called_operators(archive.program)):
        _check_resolved(target, where)
    state_dict = _tensors(archive, archive.weights, WEIGHTS_DIR)
    constants = _tensors(archive, archive.constants, CONSTANTS_DIR)
    example_inputs = _example_inputs(archive.sample_inputs, f"{archive.root}/{SAMPLE_INPUTS}")
    try:
        serialized = _dict_to_dataclass(schema.ExportedProgram, archive.program)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. symbols of range constraints that no longer appear
            program = ExportedProgramDeserializer().deserialize(serialized, state_dict, constants, example_inputs)
    except Exception as exc:  # torch's own consistency checks, on a program that passed ours
        raise InvalidUpload(f"{where}: torch cannot rebuild the program ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:500] if str(exc) else ''})") from None
    if written := written_parameters(program):
        raise InvalidUpload(f"{where}: the program writes to its own parameters each time it runs "
                            f"({', '.join(written[:5])}{', ...' if len(written) > 5 else ''}), so no two calls "
                            "compute the same; export the model after the step that changes its weights has run "
                            "once (e.g. call it once in eval mode before torch.export.export)")
    # Tensors are loaded on the CPU; a program exported on a GPU names cuda in its factory and cast ops.
    retarget_devices(program.graph_module, "cpu")
    return make_inputs_positional(program)


@functools.cache
def _register_operators() -> None:
    """int8 programs call quantized_decomposed and torchao operators, which exist only once torchao is imported
    (torch.export.load fails on them in a fresh process); imported on first use, as it takes seconds."""
    importlib.import_module("torchao.quantization.pt2e")


def _check_resolved(target: str, where: str) -> None:
    """Resolve `target` as torch's deserializer will and insist on what the torch-free rules meant by it."""
    module, *path = target.split(".")
    resolved = _PYTHON_MODULES.get(module)
    for name in path:
        resolved = getattr(resolved, name, None)
    if target in PYTHON_OPERATORS and callable(resolved):
        return
    if isinstance(resolved, torch._ops.OpOverload) and resolved.namespace in OPERATOR_NAMESPACES:
        return
    if isinstance(resolved, torch._ops.HigherOrderOperator) and resolved.name() in HIGHER_ORDER_OPERATORS:
        return
    raise InvalidUpload(f"{where}: calls '{target}', which is not an operator this torch knows")


def _tensors(archive: Pt2Archive, payloads: dict[str, Payload], directory: str) -> dict[str, torch.Tensor]:
    """The config's tensors over their files' storage (shared files stay shared, like torch.export's aliasing),
    on the CPU: the library moves models to where they run."""
    files: dict[str, torch.Tensor] = {}
    tensors = {}
    for fqn, payload in payloads.items():
        if payload.path_name not in files:
            data = archive.payloads[directory + payload.path_name]
            dtype = _SERIALIZE_TO_TORCH_DTYPE[payload.dtype]
            files[payload.path_name] = (torch.frombuffer(data, dtype=dtype) if len(data)
                                        else torch.empty(0, dtype=dtype))
        # Sharing the file's storage, not a view of it (as torch.export.load does): a re-export refuses in-place
        # ops on views, and a tensor built in forward is a constant the program detaches in place (CPM-Ant's
        # reversed positions, `torch.tensor(list(range(n))[::-1])`).
        shared = files[payload.path_name]
        view = torch.empty(0, dtype=shared.dtype).set_(shared.untyped_storage(), payload.storage_offset,
                                                       payload.sizes, payload.strides)
        if payload.is_param:
            tensors[fqn] = torch.nn.Parameter(view, requires_grad=payload.requires_grad)
        else:
            tensors[fqn] = view.requires_grad_(payload.requires_grad) if payload.requires_grad else view
    return tensors


def _example_inputs(data: bytes | None, where: str):
    if not data:
        return None
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and containers
        raise InvalidUpload(f"{where}: the example inputs do not load as plain tensors ({exc})") from None
    if not (isinstance(loaded, tuple) and len(loaded) == 2 and isinstance(loaded[0], tuple)
            and isinstance(loaded[1], dict)):
        raise InvalidUpload(f"{where}: example inputs must be (args tuple, kwargs dict)")
    return loaded
