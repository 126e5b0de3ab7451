"""The `ptq` stage: calibrate on the task's data, quantize to int8, write a `.pt2` that runs int8 on x86.

A spec that asks for anything beyond the default int8 recipe (other bit widths or formats, observers, layer
selection, an accuracy budget, ...) is handed to the general path, `compression.quant.general`.
"""

from __future__ import annotations

import math
import time

import torch

from compression import formats
from compression.context import RunContext
from compression.ptq.embeddings import EmbeddingFormat
from compression.ptq.quantize import quantize_int8, quantized_layer_count
from compression.result import StageResult
from compression.specs.ptq import PTQSpec
from compression.task import Task

CALIBRATION_BATCH_SIZE = 32
ARTIFACT_NAME = "model_int8.pt2"


def apply_ptq(spec: PTQSpec, model: torch.nn.Module, task: Task, ctx: RunContext) -> StageResult:
    """Static int8 PTQ on CPU. Returns the quantized (Q/DQ) module and the exported `model_int8.pt2`."""
    if not spec.is_x86_int8_default:
        from compression.quant.general import apply_general_ptq

        return apply_general_ptq(spec, model, task, ctx)
    started = time.monotonic()
    split = task.dataset.split(spec.calibration_split)
    samples = min(spec.calibration_samples, len(split))
    total = math.ceil(samples / CALIBRATION_BATCH_SIZE)
    batches = (batch.inputs for batch in split.batches(CALIBRATION_BATCH_SIZE, shuffle=True, seed=ctx.seed,
                                                        limit=samples))
    ctx.progress("calibrate", 0, total)
    # The x86 int8 lowering is a CPU path: quantize on CPU whatever device the job runs on.
    model = model.to("cpu")
    example_inputs = tuple(t.cpu() for t in task.example_inputs)
    embeddings = (None if spec.embeddings is None
                  else EmbeddingFormat(spec.embeddings.bits, spec.embeddings.group_size))
    report: dict = {}
    quantized = quantize_int8(model, example_inputs, batches, lambda i: ctx.progress("calibrate", i, total),
                              embeddings=embeddings,
                              smoothquant_alpha=spec.smoothquant.alpha if spec.smoothquant else None, report=report)
    quantize_time = time.monotonic() - started  # export, observers, calibration and conversion

    ctx.progress("export", 0, 1)
    path = formats.format_of("model.pt2").write(quantized, example_inputs, task.workdir / ARTIFACT_NAME)
    ctx.progress("export", 1, 1)
    embedding_storage = report["embeddings"]["format"] if report.get("embeddings", {}).get("tables") else "fp32"
    artifact = formats.artifact("model.pt2", ARTIFACT_NAME, path,
                                weights="int8 symmetric, per output channel (conv, linear)",
                                activations="uint8 affine, per tensor, calibrated",
                                embeddings=embedding_storage,
                                dropped_branches=report["dropped_branches"]["modules"])
    metrics = {"calibration_samples": samples, "quantize_time_s": round(quantize_time, 3),
               "quantized_layers": quantized_layer_count(quantized),
               "time_s": round(time.monotonic() - started, 3), **report}
    if metrics["quantized_layers"] == 0:  # a job that changed nothing must not read as a success
        metrics["warnings"] = ["no conv or linear layer was quantized: the x86 int8 recipe found none it supports "
                               "(conv1d/conv2d/linear with stored weights); the model is unchanged and no faster"]
    return StageResult(quantized, [artifact], metrics)
