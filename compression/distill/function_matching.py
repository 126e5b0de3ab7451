"""Function matching (Beyer et al. 2022, "Knowledge distillation: a good teacher is patient and consistent").

Consistent mode: every step draws one augmented view of the batch (crop + flip for images, mixup for every float
input) and both teacher and student see exactly that view; the loss is KL(teacher || student) at T = 1 and no
label is used. Fixed mode, the baseline the paper beats: the teacher's outputs are computed once per training
example on the clean input and the student is fit to them under its own augmented views (crop and flip; mixup is
off because a fixed target cannot follow a blended input).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from compression.context import RunContext
from compression.data import Batch, Split
from compression.distill.augment import augmented_view, make_generator
from compression.distill.common import (
    add_student_fidelity,
    frozen_teacher,
    periodic_eval_fn,
    student_metrics,
    student_result,
    teacher_logits,
    write_float_student,
)
from compression.distill.losses import output_loss, output_loss_name
from compression.evaluate import output_tensor
from compression.output_kind import task_output_kind
from compression.program_device import move_model
from compression.result import StageResult
from compression.specs.distill import AugmentSpec, FunctionMatchingSpec
from compression.students import teacher_and_student
from compression.task import Task
from compression.training import epoch_batches, train

# Name of the extra "input" that carries precomputed teacher logits through the batch pipeline in fixed mode.
_TARGETS = "_teacher_logits"
_PRECOMPUTE_BATCH = 256
# Fixed targets are the teacher's outputs on the whole train split, held in memory: a causal LM's logits (32 MiB
# per row for a 32k vocabulary at 256 tokens) would take hundreds of gigabytes.
MAX_TEACHER_TARGET_BYTES = 4 * 1024**3


def apply_function_matching(spec: FunctionMatchingSpec, model: nn.Module, task: Task,
                            ctx: RunContext) -> StageResult:
    """Train a student (built from `spec.student`) to match `model`, the teacher; returns the student."""
    teacher_model, student_info = teacher_and_student(spec.student, model, task)
    student = move_model(student_info.model, ctx.device)
    split = task.dataset.split(task.train_split)
    kind = task_output_kind(task.output_kind, teacher_model, task.example_inputs)
    # KL at T=1 for logits (the paper's loss); other outputs are matched with their own kind's loss.
    loss_name = output_loss_name(kind, task.multi_label)
    with frozen_teacher(teacher_model, ctx.device) as teacher:
        before = student_metrics(task, teacher, student)
        if spec.teacher_targets == "consistent":
            batches = consistent_views(split, spec.augment, spec.training.batch_size, ctx)

            def loss_fn(trained: nn.Module, batch: Batch, step: int) -> torch.Tensor:
                return output_loss(output_tensor(trained(*batch.inputs)), teacher_logits(teacher, batch.inputs),
                                   loss_name)
        else:
            split_with_targets = with_teacher_targets(split, teacher, ctx)
            augment = spec.augment.model_copy(update={"mixup_alpha": 0.0})
            batches = consistent_views(split_with_targets, augment, spec.training.batch_size, ctx)

            def loss_fn(trained: nn.Module, batch: Batch, step: int) -> torch.Tensor:
                *inputs, targets = batch.inputs
                return output_loss(output_tensor(trained(*inputs)), targets, loss_name)

        with student_info.training() as before_step:
            report = train(student, loss_fn, spec.training, task, ctx, batches=batches,
                           evaluate_fn=periodic_eval_fn(task, teacher, spec.training), before_step=before_step)
    metrics = {"student_spec": student_info.description, "teacher_targets": spec.teacher_targets,
               "output_kind": kind, "loss": loss_name}
    artifact, student = write_float_student(student, task, "student.pt2", metrics)
    return add_student_fidelity(student_result(student, teacher_model, task, ctx, report, [artifact], metrics),
                                before, kind, task)


def consistent_views(split: Split, augment: AugmentSpec, batch_size: int,
                     ctx: RunContext) -> Callable[[int], Iterator[Batch]]:
    """A batch source for the training loop: shuffled batches, each replaced by one augmented view.

    The view of step k depends only on (seed, k), so a resumed run sees the views the interrupted one would have.
    The view's inputs are what both teacher and student receive, which is what makes the teacher consistent.
    """
    def from_step(start_step: int) -> Iterator[Batch]:
        source = epoch_batches(split, batch_size, ctx.seed, ctx.device, start_step)
        for step, batch in enumerate(source, start=start_step):
            generator = make_generator(ctx.seed * 1_000_003 + step)
            yield Batch(augmented_view(batch.inputs, augment, generator), batch.labels)

    return from_step


def with_teacher_targets(split: Split, teacher: nn.Module, ctx: RunContext) -> Split:
    """`split` plus one more input holding the teacher's logits on each clean example (one teacher call per
    example, ever), so shuffling and resuming handle the targets with the inputs they belong to."""
    chunks = []
    total = len(split)
    for done, batch in enumerate(split.batches(_PRECOMPUTE_BATCH, device=ctx.device)):
        chunks.append(teacher_logits(teacher, batch.inputs).float().cpu().numpy())
        needed = chunks[0][0].nbytes * total
        if needed > MAX_TEACHER_TARGET_BYTES:
            raise ValueError(f"teacher_targets 'fixed' would hold the teacher's outputs on all {total} training "
                             f"examples in memory ({needed / 1024**3:.1f} GiB, at most "
                             f"{MAX_TEACHER_TARGET_BYTES / 1024**3:.0f}); use teacher_targets 'consistent' (the "
                             "teacher runs on each batch)")
        ctx.progress("teacher_targets", min((done + 1) * _PRECOMPUTE_BATCH, total), total)
    targets = np.concatenate(chunks)
    return Split(split.name, {**split.inputs, _TARGETS: targets}, split.labels)
