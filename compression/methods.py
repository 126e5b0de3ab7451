"""From a stage spec's `method` to the function that applies it, as declared in `compression.specs.registry`.

Implementations are imported on first use so that importing the registry stays cheap and torch-free specs never
pull in a method's dependencies. Every implementation has the signature
`apply(spec, model: nn.Module, task: Task, ctx: RunContext) -> StageResult`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

from compression.specs.registry import declaration

if TYPE_CHECKING:
    from compression.context import RunContext
    from compression.result import StageResult
    from compression.task import Task


def implementation(method: str) -> Callable:
    module_name, function_name = declaration(method).implementation.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def apply_stage(spec, model, task: "Task", ctx: "RunContext") -> "StageResult":
    return implementation(spec.method)(spec, model, task, ctx)
