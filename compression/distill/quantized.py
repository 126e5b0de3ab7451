"""Quantized distillation and differentiable quantization (Polino, Pascanu, Alistarh 2018).

Both train the stage's model (a copy: the input is never modified) against the task's reference model as teacher,
with the distillation loss of `compression.distill.losses`. Quantized distillation updates full-precision shadow
weights through uniformly quantized ones (STE); differentiable quantization keeps the weights and learns, per
tensor, the non-uniform points they are rounded to.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from compression import formats
from compression.context import RunContext
from compression.data import Batch
from compression.distill.codebook_format import payload_bytes, write_codebook_model
from compression.distill.common import (
    eval_metrics_fn,
    frozen_teacher,
    periodic_eval_fn,
    student_result,
    teacher_logits,
    write_student,
)
from compression.distill.losses import distillation_loss, kind_and_loss
from compression.distill.weight_quant import (
    AttachedQuantizers,
    CodebookWeightQuantizer,
    UniformWeightQuantizer,
    bucketed_format,
    owner_of,
    quantizable_weights,
)
from compression.evaluate import output_tensor
from compression.program_device import move_model
from compression.quant.packed import write_packed
from compression.quant.weights import quantize_weight
from compression.result import StageResult
from compression.specs.distill import DifferentiableQuantizationSpec, QuantizedDistillationSpec
from compression.task import Task
from compression.training import train


def _loss_fn(teacher: nn.Module, temperature: float, alpha: float, kind: str, loss: str):
    """The distillation loss of the output's kind (`kind_and_loss`: temperature KL for class logits, cosine for
    embeddings, MSE for regression values, ...)."""
    def loss_fn(student: nn.Module, batch: Batch, step: int) -> torch.Tensor:
        logits = output_tensor(student(*batch.inputs))
        return distillation_loss(logits, teacher_logits(teacher, batch.inputs), batch.labels,
                                 temperature=temperature, alpha=alpha, loss=loss, output_kind=kind)
    return loss_fn


def _check_labels(alpha: float, task: Task) -> None:
    if alpha > 0 and not task.dataset.split(task.train_split).has_labels:
        raise ValueError("alpha > 0 needs labels in the training split; set alpha to 0 for pure distillation")


def _float_bytes(model: nn.Module) -> int:
    return sum(parameter.numel() * 4 for parameter in model.parameters())


def _rounded_metrics(student: nn.Module, task: Task, teacher: nn.Module) -> dict | None:
    """Quality of the quantized student before any training: plain post-training rounding, the baseline."""
    evaluate_fn = eval_metrics_fn(task, teacher)
    if evaluate_fn is None:
        return None
    with torch.no_grad():
        return evaluate_fn(student)


def apply_quantized_distillation(spec: QuantizedDistillationSpec, model: nn.Module, task: Task,
                                 ctx: RunContext) -> StageResult:
    _check_labels(spec.alpha, task)
    student = move_model(copy.deepcopy(model), ctx.device)
    names = quantizable_weights(student, spec.skip)
    attached = AttachedQuantizers(student, names, lambda weight: UniformWeightQuantizer(
        bucketed_format(spec.bits, spec.bucket_size, weight), spec.stochastic_rounding))
    with frozen_teacher(task.reference, ctx.device) as teacher:
        kind, loss = kind_and_loss(task, teacher, spec.alpha)
        before = _rounded_metrics(student, task, teacher)
        report = train(student, _loss_fn(teacher, spec.temperature, spec.alpha, kind, loss), spec.training, task,
                       ctx, evaluate_fn=periodic_eval_fn(task, teacher, spec.training))
    # The packed file is the stage's main artifact (listed first): it is the deployable, runnable low-bit model.
    # Quantize the final shadow weights once more, deterministically, and keep only the quantized values.
    attached.detach(bake=False)
    move_model(student, "cpu")
    weights = {}
    for name in names:
        owner, leaf = owner_of(student, name)
        weight = getattr(owner, leaf)
        weights[name] = quantize_weight(weight, bucketed_format(spec.bits, spec.bucket_size, weight))
        getattr(owner, leaf).data.copy_(weights[name].dequantized)
    artifact = write_student(student, task, "student.pt2")
    packed_path = write_packed(task.workdir / "student_packed.safetensors", student,
                               tuple(t.cpu() for t in task.example_inputs), weights)
    packed = formats.artifact("packed.safetensors", "student_packed.safetensors", packed_path, bits=spec.bits,
                              bucket_size=spec.bucket_size)
    metrics = {"output_kind": kind, "loss": loss, "bits": spec.bits, "bucket_size": spec.bucket_size,
               "quantized_weights": len(names),
               "rounded_before_training": before, "float32_bytes": _float_bytes(student),
               "packed_bytes": packed.size_bytes,
               "compression_ratio": round(_float_bytes(student) / packed.size_bytes, 3)}
    return student_result(student, task.reference, task, ctx, report, [packed, artifact], metrics)


def apply_differentiable_quantization(spec: DifferentiableQuantizationSpec, model: nn.Module, task: Task,
                                      ctx: RunContext) -> StageResult:
    _check_labels(spec.alpha, task)
    student = move_model(copy.deepcopy(model), ctx.device)
    names = quantizable_weights(student, spec.skip)
    for parameter in student.parameters():
        parameter.requires_grad_(False)
    attached = AttachedQuantizers(student, names, lambda weight: CodebookWeightQuantizer(weight, spec.bits))
    points = [quantizer.points for quantizer in attached.quantizers.values()]
    with frozen_teacher(task.reference, ctx.device) as teacher:
        kind, loss = kind_and_loss(task, teacher, spec.alpha)
        before = _rounded_metrics(student, task, teacher)
        report = train(student, _loss_fn(teacher, spec.temperature, spec.alpha, kind, loss), spec.training, task,
                       ctx, param_groups=[{"params": points}],
                       evaluate_fn=periodic_eval_fn(task, teacher, spec.training))
    move_model(student, "cpu")
    encoded = {}
    for name, quantizer in attached.quantizers.items():
        indices, codebook = quantizer.encode(attached.shadow(name))
        encoded[name] = (indices, codebook, spec.bits)
    attached.detach(bake=True)
    artifact = write_student(student, task, "student.pt2")
    packed_path = write_codebook_model(task.workdir / "student_codebook.safetensors", student,
                                       tuple(t.cpu() for t in task.example_inputs), encoded)
    packed = formats.artifact("packed.codebook.safetensors", "student_codebook.safetensors", packed_path,
                              bits=spec.bits)
    quantized_payload = sum(payload_bytes(tuple(indices.shape), bits) for indices, _, bits in encoded.values())
    metrics = {"output_kind": kind, "loss": loss, "bits": spec.bits, "quantized_weights": len(names),
               "rounded_before_training": before,
               "float32_bytes": _float_bytes(student), "packed_bytes": packed.size_bytes,
               "quantized_payload_bytes": quantized_payload,
               "compression_ratio": round(_float_bytes(student) / packed.size_bytes, 3)}
    return student_result(student, task.reference, task, ctx, report, [packed, artifact], metrics)
