"""Knowledge distillation (Hinton et al. 2015) with optional feature distillation on named intermediate values."""

from __future__ import annotations

import torch
from torch import nn

from compression.context import RunContext
from compression.data import Batch
from compression.distill.common import (
    add_student_fidelity,
    frozen_teacher,
    periodic_eval_fn,
    student_metrics,
    student_result,
    teacher_logits,
    write_float_student,
)
from compression.distill.features import capture_features, projection_for
from compression.distill.losses import distillation_loss, feature_loss, kind_and_loss
from compression.evaluate import output_tensor
from compression.modes import eval_mode
from compression.program_device import move_model
from compression.result import StageResult
from compression.specs.distill import FeaturePair, KDSpec
from compression.students import teacher_and_student
from compression.task import Task
from compression.training import train


def apply_kd(spec: KDSpec, model: nn.Module, task: Task, ctx: RunContext) -> StageResult:
    """Train a student (built from `spec.student`) to mimic `model`, the teacher; returns the student."""
    if spec.alpha > 0 and not task.dataset.split(task.train_split).has_labels:
        raise ValueError("alpha > 0 needs labels in the training split; set alpha to 0 for pure distillation")
    teacher_model, student_info = teacher_and_student(spec.student, model, task)
    student = move_model(student_info.model, ctx.device)
    kind, loss_name = kind_and_loss(task, teacher_model, spec.alpha, spec.loss)
    with frozen_teacher(teacher_model, ctx.device) as teacher, \
            capture_features(student, [pair.student for pair in spec.features]) as student_features, \
            capture_features(teacher, [pair.teacher for pair in spec.features]) as teacher_features:
        projections = _projections(spec.features, student, teacher, task, ctx, student_features, teacher_features)

        def loss_fn(trained: nn.Module, batch: Batch, step: int) -> torch.Tensor:
            targets = teacher_logits(teacher, batch.inputs)
            logits = output_tensor(trained(*batch.inputs))
            loss = distillation_loss(logits, targets, batch.labels, temperature=spec.temperature, alpha=spec.alpha,
                                     loss=loss_name, output_kind=kind)
            for index, pair in enumerate(spec.features):
                projected = projections[index](student_features[pair.student])
                loss = loss + pair.weight * feature_loss(projected, teacher_features[pair.teacher])
            return loss

        before = student_metrics(task, teacher, student)
        probe = _probe_inputs(task, ctx)
        errors_before = _feature_errors(spec.features, student, teacher, projections, probe, student_features,
                                        teacher_features)
        with student_info.training() as before_step:
            report = train(student, loss_fn, spec.training, task, ctx,
                           evaluate_fn=periodic_eval_fn(task, teacher, spec.training),
                           extra_modules={"projections": projections} if spec.features else None,
                           before_step=before_step)
        errors_after = _feature_errors(spec.features, student, teacher, projections, probe, student_features,
                                       teacher_features)
    metrics = {"student_spec": student_info.description, "output_kind": kind, "loss": loss_name,
               "temperature": spec.temperature, "alpha": spec.alpha}
    artifact, student = write_float_student(student, task, "student.pt2", metrics)
    if spec.features:
        metrics["feature_mse"] = {"before": errors_before, "after": errors_after}
    return add_student_fidelity(student_result(student, teacher_model, task, ctx, report, [artifact], metrics),
                                before, kind, task)


def _probe_inputs(task: Task, ctx: RunContext) -> tuple[torch.Tensor, ...]:
    """A fixed batch (from the eval split when there is one) on which feature errors are reported."""
    name = task.eval_split if task.eval_split in task.dataset.split_names else task.train_split
    return tuple(t.to(ctx.device) for t in task.dataset.split(name).head(256).inputs)


def _feature_errors(pairs: list[FeaturePair], student: nn.Module, teacher: nn.Module, projections: nn.ModuleList,
                    inputs: tuple[torch.Tensor, ...], student_features: dict, teacher_features: dict) -> dict:
    """Per pair "student->teacher": MSE between the projected student feature and the teacher's, in eval mode."""
    if not pairs:
        return {}
    eval_mode(student)
    projections.eval()
    with torch.no_grad():
        student(*inputs)
        teacher(*inputs)
        return {f"{pair.student}->{pair.teacher}": round(float(feature_loss(projections[index](
            student_features[pair.student]), teacher_features[pair.teacher])), 6)
            for index, pair in enumerate(pairs)}


def _projections(pairs: list[FeaturePair], student: nn.Module, teacher: nn.Module, task: Task, ctx: RunContext,
                 student_features: dict, teacher_features: dict) -> nn.ModuleList:
    """One projection per feature pair, sized from a forward pass on the example inputs."""
    if not pairs:
        return nn.ModuleList()
    inputs = tuple(t.to(ctx.device) for t in task.example_inputs)
    eval_mode(student)
    with torch.no_grad():
        student(*inputs)
        teacher(*inputs)
    return nn.ModuleList(projection_for(student_features[pair.student], teacher_features[pair.teacher])
                         for pair in pairs).to(ctx.device)
