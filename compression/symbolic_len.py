"""`len()` of a tensor as its symbolic first dimension while a transformers model is exported.

`len(tensor)` must return a Python int, so under torch.export it fixes the batch, the tensor's first dimension, to
the example's size: RT-DETR, RT-DETR v2, D-FINE and DEIMv2 compute `batch_size = len(source_flatten)` in their
forward, and their export at a dynamic batch failed with "Constraints violated (batch)". A module's functions look
a global name up in their module before the builtins, so a `len` placed in the modeling modules for the export's
duration gives them `tensor.shape[0]` (a symbolic size under tracing, an int otherwise) and the program keeps its
dynamic batch; `len` of anything else is the builtin's.
"""

from __future__ import annotations

import builtins
import sys
from contextlib import contextmanager
from typing import Iterator

import torch

_MISSING = object()


def _shape_len(value):
    return value.shape[0] if isinstance(value, torch.Tensor) and value.dim() else builtins.len(value)


@contextmanager
def symbolic_len(model: torch.nn.Module) -> Iterator[None]:
    """Within the block, `len` of a tensor in the code of `model`'s transformers modules is its first dimension."""
    modules = {sys.modules.get(type(module).__module__) for module in model.modules()}
    patched = [module for module in modules
               if module is not None and module.__name__.startswith("transformers.models.")]
    previous = {module: vars(module).get("len", _MISSING) for module in patched}
    for module in patched:
        module.len = _shape_len
    try:
        yield
    finally:
        for module, value in previous.items():
            if value is _MISSING:
                del module.len
            else:
                module.len = value
