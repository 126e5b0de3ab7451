"""Learning-rate schedule and optimizer construction from a TrainingSpec."""

from __future__ import annotations

import math

import torch

from compression.specs.training import TrainingSpec

# Each param group remembers its peak learning rate here; the schedule scales it every step. Stored in the group so
# that it is saved with the optimizer state and survives a resume.
PEAK_LR_KEY = "peak_lr"


def lr_factor(step: int, spec: TrainingSpec) -> float:
    """Multiplier of the peak learning rate for the update made at `step` (0-based).

    Warmup rises linearly, reaching 1 at the update `warmup_steps - 1`; then cosine decays from 1 towards 0 over the
    remaining steps (the last update uses a small positive rate), or stays at 1.
    """
    if step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    if spec.schedule == "constant":
        return 1.0
    decay_steps = spec.steps - spec.warmup_steps
    progress = (step - spec.warmup_steps) / decay_steps
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(param_groups: list[dict], spec: TrainingSpec) -> torch.optim.Optimizer:
    """Optimizer over `param_groups`; a group's own lr / weight_decay override the spec's."""
    groups = []
    for group in param_groups:
        group = dict(group)
        group["params"] = [p for p in group["params"] if p.requires_grad]
        group.setdefault("lr", spec.lr)
        group.setdefault("weight_decay", spec.weight_decay)
        group[PEAK_LR_KEY] = group["lr"]
        groups.append(group)
    if not any(group["params"] for group in groups):
        raise ValueError("nothing to train: no parameter requires grad")
    if spec.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum)
    optimizer_class = torch.optim.AdamW if spec.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(groups, lr=spec.lr)


def set_learning_rates(optimizer: torch.optim.Optimizer, step: int, spec: TrainingSpec) -> float:
    """Apply the schedule for `step` to every group; returns the first group's learning rate."""
    factor = lr_factor(step, spec)
    for group in optimizer.param_groups:
        group["lr"] = group[PEAK_LR_KEY] * factor
    return optimizer.param_groups[0]["lr"]
