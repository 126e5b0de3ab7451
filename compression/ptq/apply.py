"""The `ptq` stage: calibrate on the task's data, quantize to int8, write a `.pt2` that runs int8 on x86.

A spec that asks for anything beyond the default int8 recipe (other bit widths or formats, observers, layer
selection, an accuracy budget, ...) is handed to the general path, `compression.quant.general`.
"""

from __future__ import annotations

import math
import time

import torch

from compression.context import RunContext
from compression.io import export_model, save_program
from compression.ptq.quantize import quantize_int8, quantized_layer_count
from compression.result import Artifact, StageResult
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
    quantized = quantize_int8(model, example_inputs, batches, lambda i: ctx.progress("calibrate", i, total))
    quantize_time = time.monotonic() - started  # export, observers, calibration and conversion

    ctx.progress("export", 0, 1)
    path = save_program(export_model(quantized, example_inputs), task.workdir / ARTIFACT_NAME)
    ctx.progress("export", 1, 1)
    artifact = Artifact(ARTIFACT_NAME, path, "model.pt2", {
        "format": "torch.export program with int8 quantize/dequantize nodes (pt2e, x86 inductor quantizer)",
        "weights": "int8 symmetric, per output channel",
        "activations": "uint8 affine, per tensor, calibrated",
        "run": "torch.export.load(path).module(), then torch.compile under "
               "torch._inductor.config.freezing=True to get int8 kernels; eager runs in fp32 and is slower",
    })
    metrics = {"calibration_samples": samples, "quantize_time_s": round(quantize_time, 3),
               "quantized_layers": quantized_layer_count(quantized),
               "time_s": round(time.monotonic() - started, 3)}
    return StageResult(quantized, [artifact], metrics)
