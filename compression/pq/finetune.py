"""Finetuning used by iPQ (between groups) and by Quant-Noise training, on top of the shared training loop."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor, nn

from compression.context import RunContext
from compression.data import Batch
from compression.distill.common import frozen_teacher, teacher_logits
from compression.distill.losses import distillation_loss, label_loss_kind, output_loss_name
from compression.evaluate import evaluate, output_tensor
from compression.labels import label_loss
from compression.modes import is_training, set_mode
from compression.output_kind import task_output_kind
from compression.pq.parametrizations import set_noise
from compression.specs.training import TrainingSpec
from compression.task import Task
from compression.training.loop import TrainReport, train

# Cap on evaluation examples during and between finetunings; a stage's before/after evaluations use the whole split.
EVAL_SAMPLES_DURING_TRAINING = 2048


def make_loss(distillation, teacher: nn.Module | None, labelled: bool,
              output_kind: str = "logits", multi_label: bool = False) -> Callable[[nn.Module, Batch, int], Tensor]:
    """The label loss on labels (`compression.labels.label_loss`), or distillation from `teacher` with the output
    kind's loss (KL at T for logits, mixed with the labels when there are any, as a regression output's MSE is;
    other outputs are not class scores, so labels are not mixed in)."""
    loss = output_loss_name(output_kind, multi_label)
    if distillation is None:
        if not labelled:
            raise ValueError("the training split has no labels: enable distillation from the uncompressed model")

        def labels_only(model: nn.Module, batch: Batch, step: int) -> Tensor:
            return label_loss(output_tensor(model(*batch.inputs)), batch.labels, label_loss_kind(loss, output_kind))

        return labels_only
    label_weight = 1.0 - distillation.weight if labelled and (loss == "kl" or output_kind == "regression") else 0.0

    def distilled_loss(model: nn.Module, batch: Batch, step: int) -> Tensor:
        target = teacher_logits(teacher, batch.inputs)
        return distillation_loss(output_tensor(model(*batch.inputs)), target, batch.labels,
                                 temperature=distillation.temperature, alpha=label_weight, loss=loss,
                                 output_kind=output_kind)

    return distilled_loss


def finetune(model: nn.Module, spec: TrainingSpec, distillation, task: Task, ctx: RunContext,
             phase: str) -> TrainReport:
    """Train `model` (centroids and whatever full-precision weights still require grad) with Quant-Noise on.

    The checkpoints and progress of this run are namespaced by `phase`, so that the several finetunings of one
    iPQ stage each resume from their own checkpoint.
    """
    labelled = task.dataset.split(task.train_split).has_labels
    eval_split = task.dataset.split(task.eval_split) if task.eval_split in task.dataset.split_names else None

    def evaluate_without_noise(trained: nn.Module) -> dict:
        set_noise(trained, False)
        try:
            return evaluate(trained, eval_split, reference=None if eval_split.has_labels else task.reference,
                            max_samples=EVAL_SAMPLES_DURING_TRAINING)
        finally:
            set_noise(trained, True)

    with frozen_teacher(task.reference, ctx.device) as teacher:
        loss_fn = make_loss(distillation, teacher if distillation is not None else None, labelled,
                            task_output_kind(task.output_kind, teacher, task.example_inputs), task.multi_label)
        set_noise(model, True)
        try:
            return train(ModeSwitchKeepsParametrizations(model), loss_fn, spec, task, _namespaced(ctx, phase),
                         evaluate_fn=evaluate_without_noise if eval_split is not None else None)
        finally:
            set_noise(model, False)


class ModeSwitchKeepsParametrizations(nn.Module):
    """`model` behind a wrapper whose train()/eval() keep its parametrizations.

    Switching an exported module's mode rewrites its graph (torchao's move_exported_model_to_train/eval), and each
    rewrite calls GraphModule.delete_all_unused_submodules, which deletes every `parametrizations` container
    because no graph node names it directly; the rewrite then fails on the parametrized weight. During the switch
    the wrapper shadows that method on this one instance with a no-op. The loop sees a plain module, so it switches
    modes through the wrapper. A switch to the mode the model is already in is skipped: for an exported module it
    re-traces torchao's patterns, which takes seconds.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.training = is_training(model)

    def forward(self, *inputs):
        return self.model(*inputs)

    def train(self, mode: bool = True) -> "ModeSwitchKeepsParametrizations":
        self.training = mode
        if is_training(self.model) == mode:  # an exported module's switch re-traces patterns: seconds, not free
            return self
        if not isinstance(self.model, torch.fx.GraphModule):
            set_mode(self.model, mode)
        else:
            object.__setattr__(self.model, "delete_all_unused_submodules", lambda: None)
            try:
                set_mode(self.model, mode)
            finally:
                object.__delattr__(self.model, "delete_all_unused_submodules")
        return self


def _namespaced(ctx: RunContext, phase: str) -> RunContext:
    def report(event):
        ctx.report(dataclasses.replace(event, phase=f"{phase}.{event.phase}"))

    return dataclasses.replace(
        ctx, report=report,
        save_checkpoint=lambda name, data: ctx.save_checkpoint(f"{phase}.{name}", data),
        load_checkpoint=lambda name: ctx.load_checkpoint(f"{phase}.{name}"))
