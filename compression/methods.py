"""Registry from a stage spec's `method` to the function that applies it.

Implementations are imported on first use so that importing the registry stays cheap and torch-free specs never
pull in a method's dependencies. Every implementation has the signature
`apply(spec, model: nn.Module, task: Task, ctx: RunContext) -> StageResult`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from compression.context import RunContext
    from compression.result import StageResult
    from compression.task import Task

_IMPLEMENTATIONS = {
    "ptq": "compression.ptq.apply:apply_ptq",
}


def implementation(method: str) -> Callable:
    try:
        module_name, function_name = _IMPLEMENTATIONS[method].split(":")
    except KeyError:
        raise ValueError(f"unknown method '{method}'; known: {sorted(_IMPLEMENTATIONS)}") from None
    return getattr(importlib.import_module(module_name), function_name)


def apply_stage(spec, model, task: "Task", ctx: "RunContext") -> "StageResult":
    return implementation(spec.method)(spec, model, task, ctx)
