"""Finetuning around pruning, on the shared training loop: plain or distilled recovery, the gradual (cubic)
schedule of Zhu & Gupta, and lottery-ticket rewinding.

All of them pass the masks to the loop as an extra module, so its checkpoints carry them and a resumed job
continues with exactly the masks it had.
"""

from __future__ import annotations

import itertools
from contextlib import nullcontext
from dataclasses import replace

import torch
from torch import nn

from compression.context import RunContext
from compression.data import Batch
from compression.distill.losses import check_label_mix, distillation_loss, output_loss_name
from compression.evaluate import evaluate, output_tensor
from compression.labels import label_loss
from compression.modes import writing_batch_statistics
from compression.output_kind import task_output_kind
from compression.prune.masks import WeightMasks, keep_top, rank_pruned_first, weight_scores
from compression.specs.prune import GradualScheduleSpec, PruneDistillSpec, PruneSpec
from compression.task import Task
from compression.training.loop import TrainReport, train

EVAL_SAMPLES = 2048


def recovery_loss(task: Task, distill: PruneDistillSpec | None):
    """The label loss on the labels (`compression.labels.label_loss`: cross-entropy, or binary cross-entropy for
    0/1 targets), or distillation from the unpruned upload (always when there are no labels)."""
    has_labels = task.dataset.split(task.train_split).has_labels
    kind = task_output_kind(task.output_kind, task.reference, task.example_inputs)
    if distill is None and has_labels:
        def loss(model: nn.Module, batch: Batch, step: int) -> torch.Tensor:
            return label_loss(output_tensor(model(*batch.inputs)), batch.labels, kind)
        return loss
    temperature = distill.temperature if distill else 1.0
    loss_name = output_loss_name(kind, task.multi_label)
    alpha = distill.alpha if distill else 0.0
    check_label_mix(alpha, loss_name, kind)

    def distilled(model: nn.Module, batch: Batch, step: int) -> torch.Tensor:
        with torch.no_grad():
            teacher = output_tensor(task.reference(*batch.inputs))
        return distillation_loss(output_tensor(model(*batch.inputs)), teacher, batch.labels,
                                 temperature=temperature, alpha=alpha, loss=loss_name, output_kind=kind)
    return distilled


def evaluation(task: Task):
    split = task.dataset.split(task.eval_split)
    reference = None if split.has_labels else task.reference
    return lambda model: evaluate(model, split, reference, max_samples=EVAL_SAMPLES)


def finetune(model: nn.Module, spec: PruneSpec, task: Task, ctx: RunContext, masks: WeightMasks | None = None,
             *, before_step=None, extra_modules: dict[str, nn.Module] | None = None) -> TrainReport:
    """Recovery training. With `masks`, pruned weights get no gradient and are re-zeroed before every step (the
    masks go into the checkpoints); without, the whole (structurally pruned) model trains."""
    training = spec.finetune
    extra_modules = dict(extra_modules or {})
    step_hook = before_step
    if masks is not None:
        extra_modules["prune_masks"] = masks

        def step_hook(model: nn.Module, step: int) -> None:
            if before_step is not None:
                before_step(model, step)
            masks.apply_to_weights()

    with masks.held() if masks is not None else nullcontext():
        report = train(model, recovery_loss(task, spec.distill), training, task, ctx,
                       evaluate_fn=evaluation(task) if training.eval_every else None, before_step=step_hook,
                       extra_modules=extra_modules)
    if masks is not None:
        masks.apply_to_weights()
    return report


def recalibrate_batch_norm(model: nn.Module, task: Task, ctx: RunContext, batches: int,
                           batch_size: int = 64) -> None:
    """Re-estimate BatchNorm running statistics on training inputs, without gradients or labels.

    Pruning shifts every activation distribution, so the statistics measured on the dense model no longer match and
    a heavily pruned BatchNorm network can collapse to one class before any finetuning; a few forward passes repair
    most of that. Each statistic becomes the plain mean of its per-batch values over the `batches` passes (as
    `torch.optim.swa_utils.update_bn` does), not the model's own moving average: at the usual momentum 0.1, 16
    passes keep 0.9^16 = 19 % of the stale value, and at momentum 0 (frozen statistics, e.g. torchcrepe's)
    nothing moves.
    """
    split = task.dataset.split(task.train_split)
    with writing_batch_statistics(model) as statistics:
        if not statistics:
            return
        sums = [torch.zeros_like(statistic) for statistic in statistics]
        done = 0
        with torch.no_grad():
            # A small split is cycled over until `batches` passes have run.
            for epoch in itertools.count():
                for batch in split.batches(batch_size, shuffle=True, seed=ctx.seed + epoch,
                                           limit=(batches - done) * batch_size, device=ctx.device):
                    model(*batch.inputs)
                    for total, statistic in zip(sums, statistics):
                        total += statistic
                    done += 1
                    ctx.progress("recalibrate", done, batches)
                if done >= batches:
                    break
            for statistic, total in zip(statistics, sums):
                statistic.copy_(total / done)


def cubic_sparsity(step: int, target: float, schedule: GradualScheduleSpec, total_steps: int) -> float:
    """Zhu & Gupta: s_t = s_f + (s_i - s_f) * (1 - progress)**3, progress = (t - t0) / (t1 - t0) clipped to [0, 1].
    Pruning fast at first, while many redundant weights remain, and slowly near the target."""
    end = schedule.end_step or max(1, int(0.75 * total_steps))
    progress = min(1.0, max(0.0, (step - schedule.start_step) / (end - schedule.start_step)))
    return target + (schedule.initial_sparsity - target) * (1.0 - progress) ** 3


def gradual_finetune(model: nn.Module, spec: PruneSpec, task: Task, ctx: RunContext,
                     masks: WeightMasks) -> TrainReport:
    """Raise the sparsity on the cubic schedule every `prune_every` steps (and at `end_step`) while training,
    ranking the current weights by the spec's criterion ('magnitude' or 'lamp')."""
    schedule, total = spec.gradual, spec.finetune.steps
    end = schedule.end_step or max(1, int(0.75 * total))

    def update_masks(model: nn.Module, step: int) -> None:
        on_grid = step >= schedule.start_step and (step - schedule.start_step) % schedule.prune_every == 0
        if not (step == end or (on_grid and step < end)):
            return
        sparsity = cubic_sparsity(step, spec.sparsity, schedule, total)
        scores = rank_pruned_first(weight_scores(masks, spec.criterion), masks)
        masks.set(keep_top(scores, sparsity, spec.scope))

    return finetune(model, spec, task, ctx, masks, before_step=update_masks)


class WeightSnapshot(nn.Module):
    """Every parameter and buffer of the model at the rewind step, as buffers, so the training checkpoint carries
    them."""

    def __init__(self, model: nn.Module):
        super().__init__()
        for index, tensor in enumerate(model.state_dict().values()):
            self.register_buffer(f"tensor_{index}", tensor.detach().clone())

    @torch.no_grad()
    def record(self, model: nn.Module) -> None:
        for index, tensor in enumerate(model.state_dict().values()):
            getattr(self, f"tensor_{index}").copy_(tensor)

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        for index, tensor in enumerate(model.state_dict().values()):
            tensor.copy_(getattr(self, f"tensor_{index}"))


def lottery_ticket(model: nn.Module, spec: PruneSpec, task: Task, ctx: RunContext,
                   masks: WeightMasks) -> TrainReport:
    """Frankle et al. with rewinding: train densely recording the weights at `rewind_step`, prune the trained
    weights (by magnitude or LAMP), reset the survivors (and every other parameter and statistic) to the recording, and
    retrain with the mask for the same number of steps. Each phase checkpoints under its own name."""
    snapshot = WeightSnapshot(model)

    def record_at_rewind_step(model: nn.Module, step: int) -> None:
        if step == spec.rewind_step:
            snapshot.record(model)

    dense = finetune(model, spec, task, _phase(ctx, "dense"), masks, before_step=record_at_rewind_step,
                     extra_modules={"rewind_snapshot": snapshot})
    masks.set(keep_top(weight_scores(masks, spec.criterion), spec.sparsity, spec.scope))
    snapshot.restore(model)
    masks.apply_to_weights()
    retrain = finetune(model, spec, task, _phase(ctx, "retrain"), masks)
    retrain.metrics = {**retrain.metrics, "dense_final_loss": dense.final_loss}
    return retrain


def _phase(ctx: RunContext, phase: str) -> RunContext:
    """The same context, with checkpoints of this phase stored under their own names."""
    return replace(ctx, save_checkpoint=lambda name, data: ctx.save_checkpoint(f"{phase}.{name}", data),
                   load_checkpoint=lambda name: ctx.load_checkpoint(f"{phase}.{name}"))
