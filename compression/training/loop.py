"""The one optimizer loop every training method (QAT, distillation, iPQ finetuning, pruning) runs.

The method supplies the loss; the loop owns everything a long job needs to be a good citizen of the service:
train/eval mode for exported programs, warmup + cosine schedule, global-norm clipping, mixed precision on CUDA,
progress with cancellation after every step, and checkpoints that make a resumed run continue exactly where the
interrupted one stopped (the same batches, dropout masks and optimizer state: bit-identical on CPU).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from compression.context import Cancelled, RunContext
from compression.data import Batch, Split
from compression.errors import NonFiniteLoss
from compression.modes import eval_mode, train_mode
from compression.program_device import move_model
from compression.specs.training import TrainingSpec
from compression.task import Task
from compression.training.checkpoint import CHECKPOINT_NAME, TrainingState
from compression.training.in_place_ops import rewrite_in_place_ops
from compression.training.schedule import build_optimizer, set_learning_rates

LossFn = Callable[[nn.Module, Batch, int], Tensor]
# A batch source is either an iterator (used as is, also after a resume) or a function from the step to start at to
# an iterator, which lets a resumed run see exactly the batches the interrupted one would have seen.
BatchSource = Iterator[Batch] | Callable[[int], Iterator[Batch]]

# The reported final loss is the mean over this many last steps: one step's loss is too noisy to compare runs by.
LOSS_WINDOW = 20


@dataclass
class TrainReport:
    steps: int
    final_loss: float
    metrics: dict = field(default_factory=dict)
    resumed_from_step: int = 0
    wall_time_s: float = 0.0


def train(model: nn.Module, loss_fn: LossFn, spec: TrainingSpec, task: Task, ctx: RunContext, *,
          param_groups: list[dict] | None = None,
          batches: BatchSource | None = None,
          evaluate_fn: Callable[[nn.Module], dict] | None = None,
          extra_modules: dict[str, nn.Module] | None = None,
          before_step: Callable[[nn.Module, int], None] | None = None) -> TrainReport:
    """Minimise `loss_fn(model, batch, step)` for `spec.steps` steps; returns with the model in eval mode.

    `param_groups` default to every parameter of `model` and `extra_modules` that requires grad; a group may set its
    own `lr` / `weight_decay`. `batches` default to endless reshuffled epochs of `task.train_split`.
    `evaluate_fn(model)` runs in eval mode under no_grad every `spec.eval_every` steps and at the end; its metrics
    go to progress and to the report. `before_step(model, step)` runs before each step's forward (e.g. QAT freezes
    batch-norm statistics there). A fresh run seeds torch's RNG with `ctx.seed`; a checkpoint under
    `ctx.load_checkpoint("train")` is resumed instead. On `Cancelled` the current state is checkpointed, then the
    exception propagates.
    """
    started = time.monotonic()
    device = torch.device(ctx.device)
    extra_modules = dict(extra_modules or {})
    move_model(model, device)
    for module in extra_modules.values():
        move_model(module, device)
    if param_groups is None:
        param_groups = [{"params": _trainable_parameters(model, *extra_modules.values())}]
    optimizer = build_optimizer(param_groups, spec)
    autocast_dtype, scaler = _mixed_precision(spec, device)
    state = TrainingState(model, extra_modules, optimizer, scaler)

    start_step, losses = 0, []
    saved = ctx.load_checkpoint(CHECKPOINT_NAME)
    if saved is not None:
        start_step, losses = state.restore(saved)
    else:
        torch.manual_seed(ctx.seed)
    batch_iterator = _batch_iterator(batches, task, spec, ctx, start_step)

    rewrite_in_place_ops(model)  # before the first backward, which some in-place ops fail
    _set_training(model, extra_modules, True)
    metrics: dict = {}
    completed = start_step
    try:
        for step in range(start_step, spec.steps):
            if before_step is not None:
                before_step(model, step)
            batch = next(batch_iterator, None)
            if batch is None:
                raise ValueError(f"the batch iterator ran out at step {step} of {spec.steps}")
            lr = set_learning_rates(optimizer, step, spec)
            loss, grad_norm = _optimizer_step(model, loss_fn, batch, step, lr, optimizer, scaler, autocast_dtype,
                                              spec, device)
            losses = (losses + [loss])[-LOSS_WINDOW:]
            completed = step + 1
            step_metrics = {}
            if spec.eval_every and completed % spec.eval_every == 0 and completed < spec.steps and evaluate_fn:
                metrics = _evaluate(model, extra_modules, evaluate_fn)
                step_metrics = dict(metrics)
            if completed % spec.checkpoint_every == 0 or completed == spec.steps:
                ctx.save_checkpoint(CHECKPOINT_NAME, state.to_bytes(completed, losses))
            if grad_norm is not None:
                step_metrics["grad_norm"] = round(grad_norm, 4)
            ctx.progress("train", completed, spec.steps, loss=round(loss, 6), lr=lr, **step_metrics)
    except Cancelled:
        ctx.save_checkpoint(CHECKPOINT_NAME, state.to_bytes(completed, losses))
        _set_training(model, extra_modules, False)
        raise

    _set_training(model, extra_modules, False)
    if evaluate_fn is not None:
        metrics = _evaluate(model, extra_modules, evaluate_fn, resume_training=False)
    final_loss = sum(losses) / len(losses) if losses else math.nan
    return TrainReport(steps=completed, final_loss=final_loss, metrics=metrics, resumed_from_step=start_step,
                       wall_time_s=round(time.monotonic() - started, 3))


def _optimizer_step(model, loss_fn, batch, step, lr, optimizer, scaler, autocast_dtype, spec, device):
    """One forward/backward/update; returns (loss, global gradient norm before clipping or None).

    A non-finite loss stops training with `NonFiniteLoss` (the user's learning rate or data, not a crash); with
    a GradScaler (float16) such steps are skipped by the scaler instead."""
    optimizer.zero_grad(set_to_none=True)
    autocast = (torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else nullcontext())
    with autocast:
        loss = loss_fn(model, batch, step)
    loss_value = float(loss.detach())
    if scaler is None and not math.isfinite(loss_value):
        raise NonFiniteLoss(loss_value, step + 1, lr)  # counted from 1, as progress counts steps
    (scaler.scale(loss) if scaler is not None else loss).backward()
    grad_norm = None
    if spec.grad_clip_norm is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(parameters, spec.grad_clip_norm))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return loss_value, grad_norm


def _evaluate(model, extra_modules, evaluate_fn, resume_training: bool = True) -> dict:
    _set_training(model, extra_modules, False)
    try:
        with torch.no_grad():
            return dict(evaluate_fn(model))
    finally:
        if resume_training:
            _set_training(model, extra_modules, True)


def _set_training(model: nn.Module, extra_modules: dict[str, nn.Module], training: bool) -> None:
    (train_mode if training else eval_mode)(model)
    for module in extra_modules.values():
        module.train(training)


def _trainable_parameters(*modules: nn.Module) -> list[nn.Parameter]:
    seen, parameters = set(), []
    for module in modules:
        for parameter in module.parameters():
            if parameter.requires_grad and id(parameter) not in seen:
                seen.add(id(parameter))
                parameters.append(parameter)
    return parameters


def _mixed_precision(spec: TrainingSpec, device: torch.device):
    """(autocast dtype or None, GradScaler or None): bfloat16 where the GPU has it (no loss scaling needed),
    float16 with a GradScaler otherwise; nothing on CPU."""
    if not spec.mixed_precision or device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")


def _batch_iterator(batches: BatchSource | None, task: Task, spec: TrainingSpec, ctx: RunContext,
                    start_step: int) -> Iterator[Batch]:
    if batches is None:
        return epoch_batches(task.dataset.split(task.train_split), spec.batch_size, ctx.seed, ctx.device,
                             start_step)
    if callable(batches) and not hasattr(batches, "__next__"):
        return iter(batches(start_step))
    return iter(batches)


def epoch_batches(split: Split, batch_size: int, seed: int, device: str, start_step: int = 0) -> Iterator[Batch]:
    """Endless full batches, reshuffled every epoch (epoch e uses seed + e), starting at batch `start_step`.

    The last, partial batch of an epoch is dropped (unless the split is smaller than one batch): a batch of one
    example breaks batch norm in training mode and a small one gives a noisy step.
    """
    full_batch = min(batch_size, len(split))
    per_epoch = len(split) // full_batch
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        for index, batch in enumerate(split.batches(batch_size, shuffle=True, seed=seed + epoch, device=device,
                                                    limit=per_epoch * full_batch)):
            if index >= skip:
                yield batch
        epoch, skip = epoch + 1, 0
