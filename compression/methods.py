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
    "qat": "compression.qat.apply:apply_qat",
    "kd": "compression.distill.kd:apply_kd",
    "function_matching": "compression.distill.function_matching:apply_function_matching",
    "quantized_distillation": "compression.distill.quantized:apply_quantized_distillation",
    "differentiable_quantization": "compression.distill.quantized:apply_differentiable_quantization",
    "quant_noise": "compression.pq.apply:apply_quant_noise",
    "ipq": "compression.pq.apply:apply_ipq",
    "prune": "compression.prune.apply:apply_prune",
    # Runs on a Hugging Face folder, not a program: `model` is the folder and `task` a `TextTask`.
    "llm_ptq": "compression.llm.stage:apply_llm_stage",
}


def implementation(method: str) -> Callable:
    try:
        module_name, function_name = _IMPLEMENTATIONS[method].split(":")
    except KeyError:
        raise ValueError(f"unknown method '{method}'; known: {sorted(_IMPLEMENTATIONS)}") from None
    return getattr(importlib.import_module(module_name), function_name)


def apply_stage(spec, model, task: "Task", ctx: "RunContext") -> "StageResult":
    return implementation(spec.method)(spec, model, task, ctx)
