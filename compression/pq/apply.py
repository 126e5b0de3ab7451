"""The "ipq" and "quant_noise" stages.

apply_ipq: layer groups are product-quantized in turn; after each group the centroids and the weights not yet
quantized are finetuned (optionally with Quant-Noise on the latter and distillation from the upload). The result is
written as a packed file (see `compression.pq.packing`) and the returned model is the one loaded back from it, so
every metric is measured on exactly what the user downloads.

apply_quant_noise: finetunes a full-precision model with Quant-Noise, so that a later quantization hurts less;
the stored weights are never noised, and the result is an ordinary `.pt2`.
"""

from __future__ import annotations

import copy
import io

import torch
from torch import nn

from compression import formats
from compression.context import RunContext
from compression.evaluate import evaluate
from compression.half_precision import stored_program
from compression.io import export_model, inputs_at_batch, load_program, save_program
from compression.modes import eval_mode, is_training
from compression.pq.activations import linear_input_second_moments
from compression.pq.finetune import EVAL_SAMPLES_DURING_TRAINING, ModeSwitchKeepsParametrizations, finetune
from compression.pq.kmeans import index_entropy_bits
from compression.pq.layers import find_layer_weights, select
from compression.pq.packing import load_ipq, save_ipq, theoretical_bytes
from compression.pq.parametrizations import QuantNoise, parametrizations_of, remove
from compression.pq.quantize import add_quant_noise, order_groups, plan_layers, quantize_layer
from compression.program_device import move_model
from compression.result import StageResult
from compression.specs.ipq import IPQSpec, QuantNoiseSpec
from compression.task import Task

PACKED_NAME = "model_ipq.safetensors"
WEIGHTED_KINDS = ("linear", "attention", "ffn")  # layers whose k-means is weighted by their inputs' mean square


def apply_ipq(spec: IPQSpec, model: nn.Module, task: Task, ctx: RunContext) -> StageResult:
    model = move_model(copy.deepcopy(model), ctx.device)
    before = _quality(model, task)
    float32_bytes = _float32_program_bytes(model, task)
    float32_weight_bytes = _float32_weight_bytes(model)
    layers = select(find_layer_weights(model), spec.include, spec.exclude)
    plans, skipped = plan_layers(layers, spec.block_sizes, spec.centroids, spec.min_blocks_per_centroid,
                                 spec.min_weights, spec.min_embedding_rows)
    if not plans:
        raise ValueError(f"no weight can be product-quantized: {skipped or 'no linear/conv/embedding layer'}")
    groups = order_groups(plans, spec.groups, spec.num_groups, spec.order)
    noised = add_quant_noise(model, [plan.layer for plan in plans], spec.quant_noise, ctx.seed) \
        if spec.quant_noise is not None else []

    groups_report, quantized, kmeans_report = [], 0, {}
    for index, group in enumerate(groups):
        moments = _input_moments(model, group, spec, task, ctx) if spec.activation_weighted else {}
        for plan in group:
            fit = quantize_layer(model, plan, spec.kmeans_iterations, ctx.seed, ctx.device,
                                 spec.centroid_dtype, moments.get(plan.layer.name), spec.rate_weight)
            quantized += 1
            kmeans_report[plan.layer.name] = {"centroids": plan.centroids, "block_size": plan.block_size,
                                              "blocks": plan.num_blocks, "inertia": round(fit.inertia, 6),
                                              "index_entropy_bits": round(index_entropy_bits(fit.counts), 3)}
            ctx.progress("quantize", quantized, len(plans), layer=plan.layer.name, group=index + 1)
        group_report = {"group": index + 1, "layers": [plan.layer.name for plan in group],
                        "quantized": _quality(model, task, EVAL_SAMPLES_DURING_TRAINING)}
        if index < len(groups) - 1 or spec.finetune_last_group:
            report = finetune(model, spec.training, spec.distillation, task, ctx, f"group{index + 1}")
            group_report |= {"steps": report.steps, "final_loss": round(report.final_loss, 6),
                             "resumed_from_step": report.resumed_from_step, "finetuned": report.metrics}
        groups_report.append(group_report)
    for name in parametrizations_of(model, QuantNoise):  # weights left in full precision
        remove(model, name, keep_value=False)

    ctx.progress("pack", 0, 2)
    path = task.workdir / PACKED_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    calibration = None
    if spec.activation_bits is not None:
        batches = task.dataset.split(task.train_split).batches(spec.training.batch_size, shuffle=True, seed=ctx.seed)
        calibration = [batch.inputs for _, batch in zip(range(spec.calibration_batches), batches)]
    manifest = save_ipq(model, task.example_inputs, path, spec.dense_dtype, calibration)
    packed = move_model(load_ipq(path), ctx.device)  # exported in eval mode
    ctx.progress("pack", 1, 2)
    after = _quality(packed, task)
    ctx.progress("pack", 2, 2)
    size = path.stat().st_size
    metrics = {
        "before": before, "after": after,
        "packed_bytes": size, "float32_bytes": float32_bytes,
        "compression_ratio": round(float32_bytes / size, 3),
        "payload_bytes": theoretical_bytes(manifest), "float32_weight_bytes": float32_weight_bytes,
        # Weights alone (indices + centroids + dense tensors vs float32), the figure papers report.
        "weights_compression_ratio": round(float32_weight_bytes / theoretical_bytes(manifest), 3),
        "centroid_dtype": spec.centroid_dtype, "activation_bits": spec.activation_bits,
        "quantized_layers": kmeans_report, "full_precision_layers": skipped,
        "quant_noise_layers": noised, "groups": groups_report,
    }
    artifact = formats.artifact("packed.ipq.safetensors", PACKED_NAME, path,
                                compression_ratio=metrics["compression_ratio"])
    return StageResult(packed, [artifact], metrics)


def apply_quant_noise(spec: QuantNoiseSpec, model: nn.Module, task: Task, ctx: RunContext) -> StageResult:
    model = move_model(copy.deepcopy(model), ctx.device)
    before = _quality(model, task)
    layers = select(find_layer_weights(model), spec.include, spec.exclude)
    noised = add_quant_noise(model, layers, spec.noise, ctx.seed)
    if not noised:
        raise ValueError("no weight can take Quant-Noise with these block sizes and include/exclude patterns")
    report = finetune(model, spec.training, spec.distillation, task, ctx, "quant_noise")
    for name in noised:
        remove(model, name, keep_value=False)
    program = stored_program(export_model(_in_eval(model), task.example_inputs), task.half_storage,
                             task.example_inputs)
    path = save_program(program, task.workdir / "quant_noise.pt2")
    trained = move_model(load_program(path).module(), ctx.device)  # exported in eval mode
    metrics = {"before": before, "after": _quality(trained, task), "noised_layers": noised,
               "noise": spec.noise.model_dump(), "finetune": {"steps": report.steps,
                                                              "final_loss": round(report.final_loss, 6),
                                                              "resumed_from_step": report.resumed_from_step}}
    return StageResult(trained, [formats.artifact("model.pt2", "quant_noise.pt2", path)], metrics)


def _input_moments(model: nn.Module, group: list, spec: IPQSpec, task: Task, ctx: RunContext) -> dict:
    """E[x^2] per input feature of the group's linear layers, on the model as it is now (earlier groups already
    quantized and finetuned), so each group's codebooks fit the inputs they will really see."""
    names = {plan.layer.name for plan in group if plan.layer.kind in WEIGHTED_KINDS}
    if not names:
        return {}
    batches = task.dataset.split(task.train_split).batches(spec.training.batch_size, shuffle=True, seed=ctx.seed)
    calibration = [tuple(t.to(ctx.device) for t in batch.inputs)
                   for _, batch in zip(range(spec.calibration_batches), batches)]
    return linear_input_second_moments(model, names, calibration)


def _quality(model: nn.Module, task: Task, max_samples: int | None = None) -> dict:
    """Accuracy on the eval split, or fidelity to the upload when it has no labels."""
    split = task.dataset.split(task.eval_split)
    return evaluate(ModeSwitchKeepsParametrizations(model), split,
                    reference=None if split.has_labels else task.reference, max_samples=max_samples)


def _float32_program_bytes(model: nn.Module, task: Task) -> int:
    """Size of the model as a float32 `.pt2`, the format it was uploaded in: the baseline of the ratio."""
    buffer = io.BytesIO()
    inputs = inputs_at_batch(tuple(t.cpu() for t in task.example_inputs), 2)  # as small as in the packed graph
    torch.export.save(export_model(_in_eval(copy.deepcopy(model).cpu()), inputs), buffer)
    return len(buffer.getvalue())


def _in_eval(model: nn.Module) -> nn.Module:
    # Switching an exported module's mode re-traces torchao's patterns (seconds); skip it when already in eval.
    return eval_mode(model) if is_training(model) else model


def _float32_weight_bytes(model: nn.Module) -> int:
    return 4 * sum(t.numel() for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())
