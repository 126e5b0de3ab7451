"""Torch-free: the batch sizes a job asks of a model exported with a bounded batch (`Dim("batch", max=64)`).

Such a program refuses a larger batch with a guard's AssertionError, so a training batch above the bound would
fail only once training starts. The API refuses it at submission (when the upload's signature records the
bound) and the job's dry run at its start; evaluation, calibration and latency batches are the library's own
choice and are kept within the bound instead."""

from __future__ import annotations

from compression.specs.training import TrainingSpec


def batch_bound_problems(stages: list, max_batch: int | None) -> list[str]:
    """One message per stage whose optimizer batch is larger than the model accepts."""
    if max_batch is None:
        return []
    problems = []
    for index, spec in enumerate(stages):
        for field in ("training", "finetune"):
            training = getattr(spec, field, None)
            if isinstance(training, TrainingSpec) and training.batch_size > max_batch:
                problems.append(
                    f"stage {index} ({spec.method}): {field}.batch_size {training.batch_size} is larger than the "
                    f"model accepts (it was exported with a batch dimension of at most {max_batch}); set "
                    f"{field}.batch_size to at most {max_batch}, or export with a larger Dim('batch', max=...)")
    return problems
