from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from compression.data import Dataset
from compression.half_precision import HalfStorage

# Loads another model the job was given by id (e.g. an uploaded distillation student).
ModelResolver = Callable[[str], torch.nn.Module]


@dataclass
class Task:
    """What every method gets besides its spec and the model it transforms."""

    dataset: Dataset  # bound to the model's inputs
    reference: torch.nn.Module  # the uncompressed upload in eval mode; never modified (fidelity, teacher)
    example_inputs: tuple[torch.Tensor, ...]  # a small batch for export and tracing
    workdir: Path  # methods write their artifacts here
    train_split: str = "train"
    eval_split: str = "val"
    resolve_model: ModelResolver | None = None  # None: the job names no other model
    # What the model outputs and the metric the job is judged by (compression.specs.metrics); None: detected
    # from the reference's output, and accuracy with labels else the output kind's default.
    output_kind: str | None = None
    metric: str | None = None
    # The outputs are independent labels (evaluation.multi_label, or 0/1 label matrices): distillation matches
    # logits label by label (`compression.distill.losses.output_loss_name`).
    multi_label: bool = False
    # The batch sizes the job times its models at: deployables compiled for fixed shapes are built for these.
    latency_batch_sizes: tuple[int, ...] = (1, 32)
    # How the model the stage was given stored its weights when that was half precision: the stage computes on a
    # float32 copy, and a float model it outputs is stored so again (`compression.half_precision.stored_in`).
    half_storage: HalfStorage | None = None
