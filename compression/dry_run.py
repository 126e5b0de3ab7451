"""The job's dry run: seconds after it starts, before the baseline evaluation, each stage's cheap preconditions
are checked on the real model and two rows of the data, so that a job which cannot work fails at once with the
reason instead of after minutes of evaluation, calibration or training (issue 10: "what cannot be known at
submission is found by a fast dry run at the start of the job, within seconds").

Each check is the start of its method, run for real and thrown away: the default int8 PTQ exports, drops dead
branches, prepares the quantizer's graph and runs it on two rows; the general PTQ path builds its
simulation (layer selection included); structured pruning runs its channel analysis at the asked sparsity;
unstructured pruning finds its weights; iPQ and Quant-Noise plan block sizes from the layers' shapes; QAT
prepares its quantized graph and runs it; a distillation stage builds its student, runs it on the rows and
computes one loss against the teacher; quantized and differentiable-quantization distillation attach their weight
quantizers to a copy and compute one loss. The stage methods raise the same errors themselves later; here they come
before any time is spent.

A stage that runs on an earlier stage's model of another architecture (a distillation student, a pruned or
quantized model) is checked when the stages before it keep the upload's architecture and shapes, and otherwise
left to the stage itself (reported as not checked).
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace

import torch
from torch import nn

from compression.context import Cancelled, RunContext
from compression.evaluate import output_tensor
from compression.half_precision import widened
from compression.modes import eval_mode, evaluating, is_exported
from compression.specs.batch_bound import batch_bound_problems
from compression.task import Task

DRY_ROWS = 2
# Stages whose model has the upload's architecture and shapes, so a later stage can be checked on the upload.
SAME_ARCHITECTURE = {"quant_noise"}


class DryRunFailed(ValueError):
    """A stage cannot run on this model and data; the message says which stage and why."""


def _already_quantized(model: nn.Module) -> str:
    """What to say when the upload is a quantized artifact (a job's own int8 download uploaded again): the methods
    read float weights, and their own errors ("no layer", "no channel group") do not say why there are none."""
    from compression.ptq.quantize import quantized_layer_count

    layers = quantized_layer_count(model) if isinstance(model, torch.fx.GraphModule) else 0
    return (f" (the upload is already quantized: {layers} of its layers hold int8 weights, which no method "
            "compresses again; upload the float model, with the stages that read float weights before `ptq` in "
            "one job)") if layers else ""


def _float_layers(model: nn.Module) -> list:
    from compression.quant.graph import find_layers

    return find_layers(model)


def _rows(task: Task) -> Task:
    return replace(task, example_inputs=tuple(t[:DRY_ROWS] for t in task.example_inputs))


def _check_ptq(spec, model: nn.Module, task: Task, ctx: RunContext) -> dict:
    task.dataset.split(spec.calibration_split)  # the calibration split exists
    if not spec.is_x86_int8_default:
        from compression.quant.general import build_simulation

        sim, _, _ = build_simulation(spec, copy.deepcopy(model), task, ctx)
        sim.calibrate([task.example_inputs])
        return {"checked": "general path: graph copied, layers selected, calibrated on two rows",
                "layers": len(sim.layers)}
    from compression.ptq.quantize import prepare_int8

    report: dict = {}
    prepared = prepare_int8(model, task.example_inputs, [task.example_inputs], report=report, **spec.int8_options)
    with torch.no_grad():
        prepared(*task.example_inputs)
    observers = sum(1 for name, _ in prepared.named_children() if name.startswith("activation_post_process"))
    # Conversion (about as long again, and mode switches that re-trace) is left to the stage: it fails only where
    # calibration saw non-finite values, which the stage reports itself.
    return {"checked": "exported, dead branches dropped, quantizer's observers inserted and run on two rows",
            "observers": observers, "dropped_branches": len(report["dropped_branches"].get("modules", []))}


def _check_prune(spec, model: nn.Module, task: Task, ctx: RunContext) -> dict:
    if spec.kind == "unstructured":
        from compression.prune.masks import prunable_weights

        if not prunable_weights(model, spec.exclude):
            raise ValueError("the model has no conv/linear weights left to prune (check 'exclude')")
        return {"checked": "prunable weights found"}
    from compression.io import export_model
    from compression.prune.structured import nothing_to_prune, plan_structured

    graph = model if is_exported(model) else export_model(eval_mode(model), task.example_inputs).module()
    plans, skipped = plan_structured(graph, spec.sparsity, spec.criterion, spec.exclude)
    if not plans:
        raise ValueError(nothing_to_prune(spec.sparsity, skipped))
    return {"checked": "channel analysis", "groups": len(plans), "groups_kept_whole": len(skipped)}


def _check_pq(spec, model: nn.Module, task: Task, ctx: RunContext) -> dict:
    from compression.pq.layers import find_layer_weights, select

    layers = select(find_layer_weights(model), spec.include, spec.exclude)
    if spec.method == "quant_noise":
        from compression.pq.quantize import add_quant_noise
        from compression.specs.ipq import quant_noise_label_problem

        problem = quant_noise_label_problem(spec, task.train_split,
                                            task.dataset.split(task.train_split).has_labels)
        if problem:
            raise ValueError(problem)

        if not add_quant_noise(copy.deepcopy(model), layers, spec.noise, ctx.seed):
            raise ValueError("no weight can take Quant-Noise with these block sizes and include/exclude patterns")
        return {"checked": "block sizes fit the layers"}
    from compression.pq.quantize import plan_layers

    plans, skipped = plan_layers(layers, spec.block_sizes, spec.centroids, spec.min_blocks_per_centroid,
                                 spec.min_weights, spec.min_embedding_rows)
    if not plans:
        raise ValueError(f"no weight can be product-quantized: {skipped or 'no linear/conv/embedding layer'}")
    return {"checked": "block sizes planned from the layers' shapes", "layers": len(plans),
            "full_precision_layers": len(skipped)}


def _check_qat(spec, model: nn.Module, task: Task, ctx: RunContext) -> dict:
    from compression.qat.prepare import prepare_qat

    weight_kind, activation_kind = spec.quantizers
    gm, layers = prepare_qat(copy.deepcopy(model), task.example_inputs, weight_bits=spec.weight_bits,
                             activation_bits=spec.activation_bits, weight_quantizer=weight_kind,
                             activation_quantizer=activation_kind, per_channel=spec.per_channel,
                             first_last_bits=spec.first_last_bits)
    if not layers:
        raise ValueError("the model has no conv/linear layer whose weight QAT can quantize")
    with evaluating(gm), torch.no_grad():
        gm(*task.example_inputs)
    return {"checked": "quantized graph prepared and run on two rows", "layers": len(layers)}


def _check_student(spec, model: nn.Module, task: Task, ctx: RunContext) -> dict:
    """Distillation stages: the student is built (its output shape checked against the teacher's on the rows)
    and one loss is computed, as the first training step would."""
    from compression.distill.features import capture_features, projection_for
    from compression.distill.losses import distillation_loss, feature_loss, kind_and_loss
    from compression.students import teacher_and_student

    alpha = getattr(spec, "alpha", 0.0)
    if alpha > 0 and not task.dataset.split(task.train_split).has_labels:
        raise ValueError("alpha > 0 needs labels in the training split; set alpha to 0 for pure distillation")
    teacher, student = teacher_and_student(spec.student, model, task)
    kind, loss = kind_and_loss(task, teacher, alpha, getattr(spec, "loss", None))
    batch = next(task.dataset.split(task.train_split).batches(DRY_ROWS))
    pairs = getattr(spec, "features", None) or []
    with evaluating(teacher), evaluating(student.model), torch.no_grad(), \
            capture_features(student.model, [pair.student for pair in pairs]) as student_features, \
            capture_features(teacher, [pair.teacher for pair in pairs]) as teacher_features:
        target = output_tensor(teacher(*batch.inputs))
        value = distillation_loss(output_tensor(student.model(*batch.inputs)), target, batch.labels,
                                  temperature=getattr(spec, "temperature", 1.0), alpha=alpha, loss=loss,
                                  output_kind=kind)
        for pair in pairs:  # the named values exist and a projection can map the student's onto the teacher's
            projected = projection_for(student_features[pair.student], teacher_features[pair.teacher])(
                student_features[pair.student])
            value = value + feature_loss(projected, teacher_features[pair.teacher])
    if not torch.isfinite(value):
        raise ValueError(f"the distillation loss of the untrained student is {float(value)} on the first rows")
    return {"checked": "student built and run, one loss computed", "student": student.description.get("kind"),
            "loss": loss}


def _check_quantized_training(spec, model: nn.Module, task: Task, ctx: RunContext) -> dict:
    """quantized_distillation, differentiable_quantization: the weights to quantize (and `skip`) are found, the
    quantizers attach to a copy, and the copy runs and gives one finite loss against the upload."""
    from compression.distill.losses import distillation_loss, kind_and_loss
    from compression.distill.weight_quant import (
        AttachedQuantizers,
        CodebookWeightQuantizer,
        UniformWeightQuantizer,
        bucketed_format,
        quantizable_weights,
    )

    if spec.alpha > 0 and not task.dataset.split(task.train_split).has_labels:
        raise ValueError("alpha > 0 needs labels in the training split; set alpha to 0 for pure distillation")
    student = copy.deepcopy(model)
    names = quantizable_weights(student, spec.skip)
    if not names:
        raise ValueError("the model has no conv/linear weight to quantize (check 'skip')")
    if spec.method == "quantized_distillation":
        AttachedQuantizers(student, names, lambda weight: UniformWeightQuantizer(
            bucketed_format(spec.bits, spec.bucket_size, weight), spec.stochastic_rounding))
    else:
        AttachedQuantizers(student, names, lambda weight: CodebookWeightQuantizer(weight, spec.bits))
    kind, loss = kind_and_loss(task, task.reference, spec.alpha)
    batch = next(task.dataset.split(task.train_split).batches(DRY_ROWS))
    with evaluating(student), torch.no_grad():
        value = distillation_loss(output_tensor(student(*batch.inputs)), output_tensor(task.reference(
            *batch.inputs)), batch.labels, temperature=spec.temperature, alpha=spec.alpha, loss=loss,
            output_kind=kind)
    if not torch.isfinite(value):
        raise ValueError(f"the loss of the quantized model is {float(value)} on the first rows")
    return {"checked": "weight quantizers attached to a copy, one loss computed", "weights": len(names),
            "loss": loss}


CHECKS = {"ptq": _check_ptq, "quantized_distillation": _check_quantized_training,
          "differentiable_quantization": _check_quantized_training, "prune": _check_prune, "ipq": _check_pq,
          "quant_noise": _check_pq, "qat": _check_qat}


def _check_for(spec):
    if hasattr(spec, "student"):
        return _check_student
    return CHECKS.get(spec.method)


def dry_run(stages: list, model: nn.Module, task: Task, ctx: RunContext) -> dict:
    """Check every stage's preconditions on `model` (the upload, never changed) and two rows; raise DryRunFailed
    naming the stage and the reason. Returns {"<index>:<method>": what was checked, and its seconds}."""
    problems = batch_bound_problems(stages, task.dataset.max_batch)
    if problems:
        raise DryRunFailed("dry run: " + "; ".join(problems))
    task = _rows(task)
    model = widened(model)  # what every stage computes with (`compression.half_precision`); checks leave it as is
    quantized = _already_quantized(model)
    report: dict = {}
    upload_shapes = True  # whether the stages so far hand on a model of the upload's architecture
    ctx.progress("dry_run", 0, len(stages))
    for index, spec in enumerate(stages):
        name = f"{index}:{spec.method}"
        check = _check_for(spec)
        if not upload_shapes or check is None:
            report[name] = {"checked": None if check else "nothing to check before running",
                            "why": "runs on an earlier stage's model" if not upload_shapes else None}
        else:
            started = time.monotonic()
            try:
                if quantized and spec.method == "ptq" and not _float_layers(model):
                    raise ValueError("no conv or linear layer is left in float to quantize")
                details = check(spec, model, task, ctx)
            except Cancelled:
                raise
            except Exception as exc:  # whatever the method would hit later: a user error of this model and spec
                reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                raise DryRunFailed(f"dry run: stage {index} ({spec.method}) cannot run on this model: "
                                   f"{reason[:3500]}{quantized}") from exc
            report[name] = {**details, "time_s": round(time.monotonic() - started, 3)}
        upload_shapes = upload_shapes and (spec.method in SAME_ARCHITECTURE or (
            spec.method == "prune" and spec.kind == "unstructured"))
        ctx.progress("dry_run", index + 1, len(stages))
    return report
