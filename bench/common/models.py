"""The fp32 model a benchmark compresses: trained once on its arrays, exported to `.pt2` and cached under
bench/results/cache/, so reruns skip the training."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from compression.context import RunContext
from compression.evaluate import output_tensor
from compression.io import export_model, load_model, save_program
from compression.modes import eval_mode
from compression.specs.training import TrainingSpec
from compression.task import Task
from compression.training import train

RESULTS = Path(__file__).resolve().parents[1] / "results"
CACHE = RESULTS / "cache"


def cross_entropy(model, batch, step):
    return F.cross_entropy(output_tensor(model(*batch.inputs)), batch.labels)


def trained_model_path(name: str, build: Callable[[], torch.nn.Module], task: Task, training: TrainingSpec) -> Path:
    """`CACHE/name`: the model `build()` makes (seed 0), trained with cross-entropy on `task`'s train split and
    exported in eval mode; trained here only if the file is missing."""
    cache = CACHE / name
    if not cache.exists():
        torch.manual_seed(0)
        model = build()
        started = time.monotonic()
        train(model, cross_entropy, training, task, RunContext())
        print(f"trained {name} in {time.monotonic() - started:.0f} s", file=sys.stderr)
        cache.parent.mkdir(parents=True, exist_ok=True)
        save_program(export_model(eval_mode(model), task.example_inputs), cache)
    return cache


def trained_model(name: str, build: Callable[[], torch.nn.Module], task: Task,
                  training: TrainingSpec) -> torch.nn.Module:
    """The cached model of `trained_model_path`, loaded as the service would hand it to a method."""
    return load_model(trained_model_path(name, build, task, training))
