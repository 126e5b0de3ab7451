"""Quantization-aware training as a pipeline stage (method "qat")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import fx, nn

from compression import formats
from compression.context import RunContext
from compression.data import Batch
from compression.distill.losses import output_loss, output_loss_name
from compression.evaluate import evaluate, output_tensor
from compression.io import export_model, save_program
from compression.labels import label_loss
from compression.modes import eval_mode
from compression.output_kind import task_output_kind
from compression.program_device import move_model
from compression.qat.activation_quantizers import PACTActivationQuantizer
from compression.qat.prepare import (
    INPUT_QUANTIZERS,
    QATLayer,
    calibrate,
    freeze_batchnorm,
    layer_summary,
    materialize,
    prepare_qat,
    quantizer_modules,
)
from compression.quant.embedding_tables import quantize_tables
from compression.quant.graph import get_tensor
from compression.quant.packed import write_packed
from compression.result import StageResult
from compression.specs.qat import QATSpec
from compression.task import Task
from compression.training import TrainReport, train

PT2_NAME = "model_qat.pt2"
PACKED_NAME = "model_qat_packed.safetensors"


def apply_qat(spec: QATSpec, model: nn.Module, task: Task, ctx: RunContext) -> StageResult:
    """Train with fake quantization, bake the quantized weights in, and write two artifacts: a .pt2 (float
    tensors holding quantized values, activation fake-quant in the graph) and the bit-packed safetensors file
    (`compression.quant.packed`), which is the real size at any bit width. Embedding tables, which training does
    not quantize, are then quantized as PTQ stores them (`spec.embeddings`, `compression.quant.embedding_tables`;
    a BERT's word table is a fifth of its weights, and left fp32 it held a 4-bit QAT encoder near 3x smaller).
    The returned model is on the CPU."""
    trained = train_qat(spec, model, task, ctx)
    gm = move_model(trained.model, "cpu")
    summary = layer_summary(gm, trained.layers)
    quantized_weights = materialize(gm, trained.layers)
    tables = quantize_tables(gm, spec.embeddings, {layer.weight_attr: layer.name for layer in trained.layers})
    with torch.no_grad():  # the .pt2 and the metrics compute with the tables the packed file stores
        for attr, table in tables.quantized.items():
            get_tensor(gm, attr).copy_(table.dequantized)
    example_inputs = tuple(t.cpu() for t in task.example_inputs)

    metadata = {"weight_bits": spec.weight_bits, "activation_bits": spec.activation_bits,
                "embeddings": tables.storage}
    pt2 = save_program(export_model(gm, example_inputs), task.workdir / PT2_NAME)
    packed = write_packed(task.workdir / PACKED_NAME, gm, example_inputs, quantized_weights | tables.quantized,
                          lookup_tables=set(tables.quantized))
    # The packed file comes first: it is the compressed deliverable, so the job's size and compression ratio are
    # its bytes; the .pt2 (fake-quant graph, float storage) is larger than the fp32 upload.
    artifacts = [formats.artifact("packed.safetensors", PACKED_NAME, packed, **metadata),
                 formats.artifact("model.pt2", PT2_NAME, pt2, **metadata)]
    weight_kind, activation_kind = spec.quantizers
    report = trained.report
    metrics = {
        "weight_bits": spec.weight_bits, "activation_bits": spec.activation_bits,
        "quantizer": spec.quantizer, "weight_quantizer": weight_kind,
        "activation_quantizer": activation_kind if spec.activation_bits is not None else None,
        "first_last_bits": spec.first_last_bits,
        "pact_fallback_to_lsq": trained.pact_fallbacks,
        "packed_bytes": packed.stat().st_size, "pt2_bytes": pt2.stat().st_size,
        "train": {"steps": report.steps, "final_loss": round(report.final_loss, 6),
                  "resumed_from_step": report.resumed_from_step, "wall_time_s": report.wall_time_s},
        "layers": summary,
        "embeddings": tables.report(written=True),
        "after": _quality(gm, task),
    }
    return StageResult(gm, artifacts, metrics)


@dataclass
class TrainedQAT:
    model: fx.GraphModule  # in eval mode, quantizers still in the graph (weights not yet materialized)
    layers: list[QATLayer]
    pact_fallbacks: list[str]
    report: TrainReport


def train_qat(spec: QATSpec, model: nn.Module, task: Task, ctx: RunContext) -> TrainedQAT:
    """Prepare, calibrate and train a QAT copy of `model` with the shared loop (resumable from its checkpoint)."""
    weight_kind, activation_kind = spec.quantizers
    example_inputs = tuple(t.to(ctx.device) for t in task.example_inputs)
    gm, layers = prepare_qat(move_model(model, ctx.device), example_inputs, weight_bits=spec.weight_bits,
                             activation_bits=spec.activation_bits, weight_quantizer=weight_kind,
                             activation_quantizer=activation_kind, per_channel=spec.per_channel,
                             first_last_bits=spec.first_last_bits)
    eval_mode(gm)
    train_split = task.dataset.split(task.train_split)
    # The same examples every time (seeded), so a resumed run rebuilds the same quantizers before loading them.
    calibration = (batch.inputs for batch in train_split.batches(spec.training.batch_size, shuffle=True,
                                                                   seed=ctx.seed, limit=spec.calibration_samples,
                                                                   device=ctx.device))
    pact_fallbacks = calibrate(gm, layers, calibration)
    ctx.progress("calibrate", 1, 1)
    report = train(gm, _loss_fn(train_split.has_labels, task), spec.training, task, ctx,
                   param_groups=_param_groups(gm, spec), extra_modules={"quantizers": quantizer_modules(gm, layers)},
                   before_step=_bn_freezer(spec.freeze_bn_after))
    return TrainedQAT(gm, layers, pact_fallbacks, report)


def _loss_fn(has_labels: bool, task: Task):
    """The label loss on labels (`compression.labels.label_loss`: cross-entropy, binary cross-entropy for 0/1
    targets, MSE for regression values); without labels, match the uncompressed model's outputs with the loss of
    their kind (`compression.distill.losses.output_loss_name`: KL for class logits, a binary logit's included,
    cosine for embeddings, MSE for regression values and hidden states)."""
    reference = task.reference
    kind = task_output_kind(task.output_kind, reference, task.example_inputs)
    matching = output_loss_name(kind, task.multi_label)

    def loss(model: nn.Module, batch: Batch, step: int) -> torch.Tensor:
        logits = output_tensor(model(*batch.inputs))
        if has_labels:
            return label_loss(logits, batch.labels, kind)
        with torch.no_grad():
            target = output_tensor(reference(*batch.inputs)).float()
        return output_loss(logits, target, matching)

    return loss


def _param_groups(gm: nn.Module, spec: QATSpec) -> list[dict]:
    """Weights (spec's decay), PACT clips (their own L2 decay) and LSQ steps (no decay: it would shrink them)."""
    clips = [q.alpha for q in getattr(gm, INPUT_QUANTIZERS).values() if isinstance(q, PACTActivationQuantizer)]
    steps = [p for name, p in gm.named_parameters() if name.endswith(".step")]
    special = {id(p) for p in clips + steps}
    weights = [p for p in gm.parameters() if id(p) not in special]
    groups = [{"params": weights}, {"params": steps, "weight_decay": 0.0},
              {"params": clips, "weight_decay": spec.pact_alpha_decay}]
    return [group for group in groups if group["params"]]


def _bn_freezer(freeze_after: int | None):
    if freeze_after is None:
        return None

    def before_step(model: nn.Module, step: int) -> None:
        # Runs every step: the loop's train mode (after an evaluation) unfreezes batch norm again.
        if step >= freeze_after:
            freeze_batchnorm(model)

    return before_step


def _quality(model: nn.Module, task: Task) -> dict:
    if task.eval_split not in task.dataset.split_names:
        return {}
    split = task.dataset.split(task.eval_split)
    return evaluate(model, split, reference=None if split.has_labels else task.reference)
