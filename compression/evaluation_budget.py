"""How many examples a job evaluates on when the user did not say (`evaluation.max_samples` null).

All of the split, unless the model is large: then the first examples that fit a compute budget
(`EVALUATION_FLOPS` per evaluation of one model, at least `MIN_ROWS` examples), so that a 22M-parameter
encoder's evaluation takes seconds rather than half a minute per model on one core. The cost is counted, not
timed (`torch.utils.flop_counter` on the job's example batch), so the same model and dataset always get the same
rows, whatever the machine's load, and a stored baseline stays comparable. The metrics say when rows were left out
(`evaluation_capped`); setting `max_samples` chooses the rows instead.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from compression.data import Split
from compression.modes import evaluating
from compression.specs.common import EvaluationSpec

EVALUATION_FLOPS = 5e11
MIN_ROWS = 128


def capped_evaluation(reference: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], split: Split,
                      evaluation: EvaluationSpec) -> tuple[EvaluationSpec, str | None]:
    """`evaluation` with `max_samples` set when the split is too costly to evaluate whole, and a note saying so
    (None when nothing is left out)."""
    if evaluation.max_samples is not None or len(split) <= MIN_ROWS:
        return evaluation, None
    try:
        per_row = flops_per_example(reference, example_inputs)
    except Exception:  # a count that fails leaves the evaluation as the user asked: the whole split
        return evaluation, None
    rows = max(MIN_ROWS, int(EVALUATION_FLOPS // per_row)) if per_row > 0 else len(split)
    if rows >= len(split):
        return evaluation, None
    note = (f"evaluated on the first {rows} of {len(split)} examples of split '{split.name}': the model costs "
            f"{per_row / 1e9:.2f} GFLOP per example and an evaluation is capped at {EVALUATION_FLOPS / 1e12:g} "
            "TFLOP (set evaluation.max_samples to choose)")
    return evaluation.model_copy(update={"max_samples": rows}), note


def flops_per_example(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> float:
    with evaluating(model), FlopCounterMode(display=False) as counter:
        model(*example_inputs)
    return counter.get_total_flops() / max(1, len(example_inputs[0]))
