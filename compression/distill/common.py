"""What every distillation method shares: running the teacher, evaluating, and writing the student."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from compression import formats
from compression.context import RunContext
from compression.evaluate import evaluate, output_tensor
from compression.half_precision import float_result
from compression.io import export_model, save_program
from compression.modes import eval_mode, lacks_traced_shapes, unmeasured_frozen_batch_norms
from compression.program_device import move_model
from compression.result import Artifact, StageResult
from compression.specs.metrics import DEFAULT_METRIC, LABEL_METRICS, label_metric
from compression.specs.training import TrainingSpec
from compression.students import parameter_count
from compression.task import Task
from compression.training import TrainReport

# Cap on evaluation examples during training (the final evaluation uses the whole split).
EVAL_SAMPLES_DURING_TRAINING = 2048


@contextmanager
def frozen_teacher(teacher: nn.Module, device: str) -> Iterator[nn.Module]:
    """The teacher in eval mode on `device` for the block; its device is restored afterwards. It runs under
    no_grad in the losses, so it never holds activations for backward and its weights never change."""
    original_device = next(teacher.parameters()).device
    eval_mode(teacher)
    move_model(teacher, device)
    try:
        yield teacher
    finally:
        move_model(teacher, original_device)


def teacher_logits(teacher: nn.Module, inputs: tuple[Tensor, ...]) -> Tensor:
    with torch.no_grad():
        return output_tensor(teacher(*inputs)).detach()


def eval_metrics_fn(task: Task, teacher: nn.Module, max_samples: int | None = EVAL_SAMPLES_DURING_TRAINING):
    """A training loop `evaluate_fn`: quality on the eval split (accuracy with labels, and fidelity to the
    teacher), or None when the dataset has no eval split."""
    if task.eval_split not in task.dataset.split_names:
        return None
    split = task.dataset.split(task.eval_split)

    def evaluate_student(student: nn.Module) -> dict:
        return evaluate(student, split, reference=teacher, max_samples=max_samples, output_kind=task.output_kind,
                        metric=task.metric)

    return evaluate_student


def student_metrics(task: Task, teacher: nn.Module, student: nn.Module) -> dict | None:
    """The student's quality on the whole eval split (None without one): taken before training, it is the
    'before' of `add_student_fidelity`."""
    evaluate_fn = eval_metrics_fn(task, teacher, max_samples=None)
    return evaluate_fn(student) if evaluate_fn is not None else None


def add_student_fidelity(result: StageResult, before: dict | None, output_kind: str, task: Task) -> StageResult:
    """Add {"metric", "before", "after"}: the student's fidelity to the teacher in points before and after training,
    by the job's metric when it is a fidelity one, else the output kind's (what distillation optimizes, even when
    the job is judged by accuracy)."""
    if before is not None and "student" in result.metrics:
        name = task.metric if task.metric not in (None, *LABEL_METRICS) else DEFAULT_METRIC[output_kind]
        result.metrics["student_fidelity"] = {"metric": name, "before": round(100 * before[name], 4),
                                              "after": round(100 * result.metrics["student"][name], 4)}
    return result


def periodic_eval_fn(task: Task, teacher: nn.Module, training: TrainingSpec):
    """The training loop's `evaluate_fn` when the spec asks for evaluations during training, else None (the final
    evaluation of `student_result` covers the end of training)."""
    return eval_metrics_fn(task, teacher) if training.eval_every else None


def write_student(student: nn.Module, task: Task, file_name: str) -> Artifact:
    """Export the trained student (eval mode, on the CPU) to a `.pt2` with a dynamic batch dimension."""
    program = export_model(eval_mode(move_model(student, "cpu")), _cpu_examples(task))
    return _student_artifact(save_program(program, task.workdir / file_name), file_name, student)


def write_float_student(student: nn.Module, task: Task, file_name: str,
                        metrics: dict) -> tuple[Artifact, nn.Module]:
    """`write_student` for a float student, its tall 1-D convs turned on their side (exact, and several times
    faster on oneDNN: `compression.ptq.conv_orientation`; counted in `metrics`), and the model the stage hands on:
    the written program when a conv was turned or the student stored in the upload's half precision (so that the
    stage's timing and metrics are the download's) or when the student is a graph without traced shapes (a
    low-rank student's), which the next stage's analyses need."""
    untraced = lacks_traced_shapes(student)
    program = float_result(move_model(student, "cpu"), _cpu_examples(task), task.half_storage, metrics)
    artifact = _student_artifact(save_program(program, task.workdir / file_name), file_name, student)
    rewritten = untraced or "tall_convs_on_their_side" in metrics or task.half_storage is not None
    return artifact, (eval_mode(program.module()) if rewritten else student)


def _cpu_examples(task: Task) -> tuple[Tensor, ...]:
    return tuple(t.cpu() for t in task.example_inputs)


def _student_artifact(path, file_name: str, student: nn.Module) -> Artifact:
    return formats.artifact("model.pt2", file_name, path, parameters=parameter_count(student))


def student_result(student: nn.Module, teacher: nn.Module, task: Task, ctx: RunContext, report: TrainReport,
                   artifacts: list[Artifact], metrics: dict) -> StageResult:
    """Final metrics (student and teacher on the whole eval split on `ctx.device`, sizes, training summary) and
    the result, whose model is on the CPU like its artifact."""
    ctx.progress("evaluate", 0, 1)
    evaluate_fn = eval_metrics_fn(task, teacher, max_samples=None)
    if evaluate_fn is not None:
        with frozen_teacher(teacher, ctx.device):
            metrics["student"] = evaluate_fn(move_model(student, ctx.device))
            labelled = task.dataset.split(task.eval_split).has_labels
            if labelled:
                name = label_metric(task.output_kind)
                metrics["teacher"] = {name: evaluate(teacher, task.dataset.split(task.eval_split),
                                                     output_kind=task.output_kind)[name]}
    teacher_params, student_params = parameter_count(teacher), parameter_count(student)
    metrics |= {"teacher_parameters": teacher_params, "student_parameters": student_params,
                "parameter_ratio": round(student_params / teacher_params, 4),
                "train": {"steps": report.steps, "final_loss": report.final_loss,
                          "resumed_from_step": report.resumed_from_step, "wall_time_s": report.wall_time_s}}
    unnormalised = unmeasured_frozen_batch_norms(student)
    if unnormalised:
        metrics.setdefault("warnings", []).append(
            f"the student's batch norms {unnormalised[:4]}{' and more' if len(unnormalised) > 4 else ''} have "
            "momentum 0 and statistics that were never measured (mean 0, variance 1): they normalise nothing "
            "and never will, so the student trained as a network without normalisation, which can stall from a "
            "random start; export the student with a non-zero BatchNorm momentum (PyTorch's default is 0.1)")
    ctx.progress("evaluate", 1, 1)
    return StageResult(move_model(student, "cpu"), artifacts, metrics)
