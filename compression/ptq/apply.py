"""The `ptq` stage: calibrate on the task's data, quantize to int8, write a `.pt2` that runs int8 on x86.

A spec that asks for anything beyond the default int8 recipe (other bit widths or formats, observers, an accuracy
budget, ...) is handed to the general path, `compression.quant.general`. Layer selection (`include` / `exclude`)
stays on the default path: the layers not selected are left float in the int8 program.
"""

from __future__ import annotations

import math
import time

import torch

from compression import formats
from compression.context import RunContext
from compression.evaluate import output_tensor
from compression.io import inputs_at_batch
from compression.modes import evaluating
from compression.program_device import move_model
from compression.ptq.embeddings import EmbeddingFormat
from compression.ptq.float_weights import float_weight_report, float_weight_warning
from compression.ptq.int8_kernels import SATURATION_WARNING, activation_range_note, full_range_activations_saturate
from compression.ptq.onnx_int8 import OnnxRuntimeModel, write_onnxruntime_int8
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
    batches = (tuple(t.cpu() for t in batch.inputs) for batch in split.batches(
        CALIBRATION_BATCH_SIZE, shuffle=True, seed=ctx.seed, limit=samples))
    if "onnx_int8" in spec.extra_formats:
        batches = list(batches)  # ONNX Runtime calibrates on the same batches
    ctx.progress("calibrate", 0, total)
    # The x86 int8 lowering is a CPU path: quantize on CPU whatever device the job runs on.
    model = move_model(model, "cpu")
    float_model = model  # quantize_int8 quantizes an exported copy; ONNX Runtime quantizes its own export
    example_inputs = tuple(t.cpu() for t in task.example_inputs)
    embeddings = (None if spec.embeddings is None
                  else EmbeddingFormat(spec.embeddings.bits, spec.embeddings.group_size))
    report: dict = {}
    quantized = quantize_int8(model, example_inputs, batches, lambda i: ctx.progress("calibrate", i, total),
                              embeddings=embeddings, report=report, **spec.int8_options)
    quantize_time = time.monotonic() - started  # export, observers, calibration and conversion

    ctx.progress("export", 0, 1)
    path = formats.format_of("model.pt2").write(quantized, example_inputs, task.workdir / ARTIFACT_NAME)
    ctx.progress("export", 1, 1)
    embedding_storage = report["embeddings"]["format"] if report.get("embeddings", {}).get("tables") else "fp32"
    float_layers = report.get("float_layers", [])
    weights = "int8 symmetric, per output channel (conv, linear)"
    if report.get("weights_int8_without_kernel"):
        weights += "; recurrent, 3-D and transposed conv weights int8, dequantized before their float op"
    artifact = formats.artifact("model.pt2", ARTIFACT_NAME, path,
                                weights=weights + (f"; {len(float_layers)} layers kept float" if float_layers else ""),
                                activations=activation_range_note(spec.reduce_range),
                                embeddings=embedding_storage,
                                dropped_branches=report["dropped_branches"]["modules"])
    artifacts, runtimes, warnings = [artifact], {}, []
    if not spec.reduce_range and full_range_activations_saturate():
        warnings.append(SATURATION_WARNING)
    for extra in spec.extra_formats:
        ctx.progress(f"export {extra}", 0, 1)
        extra_started = time.monotonic()
        try:
            extra_artifact, runtime = write_extra_format(extra, float_model, quantized, example_inputs, batches,
                                                         task, spec.reduce_range)
            # The package runs only the batch sizes it was compiled for.
            checked = (inputs_at_batch(example_inputs, max(task.latency_batch_sizes)) if extra == "aoti"
                       else example_inputs)
            extra_artifact.metadata |= agreement(runtime, quantized, checked)
        except Exception as exc:  # the int8 .pt2 is the stage's result; another file that cannot be made is not
            warnings.append(f"extra format '{extra}' was not written: {type(exc).__name__}: {exc}"[:500])
            continue
        extra_artifact.metadata["build_time_s"] = round(time.monotonic() - extra_started, 3)
        artifacts.append(extra_artifact)
        runtimes[extra_artifact.name] = runtime
        ctx.progress(f"export {extra}", 1, 1)
    metrics = {"calibration_samples": samples, "quantize_time_s": round(quantize_time, 3),
               "quantized_layers": quantized_layer_count(quantized),
               "time_s": round(time.monotonic() - started, 3), **report}
    metrics["float_weights"] = float_weight_report(quantized)
    if metrics["quantized_layers"] == 0:  # a job that changed nothing must not read as a success
        warnings.insert(0, "no conv or linear layer was quantized: the x86 int8 recipe found none it supports "
                           "(conv1d/conv2d/linear with stored weights); the model is unchanged and no faster")
    elif mostly_float := float_weight_warning(metrics["float_weights"]):  # nor one that changed a little of it
        warnings.insert(0, mostly_float)
    if warnings:
        metrics["warnings"] = warnings
    return StageResult(quantized, artifacts, metrics, runtimes=runtimes)


# PTQSpec.extra_formats -> (artifact kind, file name)
EXTRA_FORMATS = {"onnx_int8": ("model.onnx", "model_int8.onnx"), "aoti": ("model.aoti.pt2", "model_int8.aoti.pt2")}


def write_extra_format(extra: str, float_model: torch.nn.Module, quantized: torch.nn.Module,
                       example_inputs: tuple[torch.Tensor, ...], calibration: list, task: Task,
                       reduce_range: bool = False) -> tuple:
    """(the artifact of one of `PTQSpec.extra_formats`, its file loaded as a module the pipeline can time)."""
    kind, name = EXTRA_FORMATS[extra]
    if extra == "onnx_int8":
        written = write_onnxruntime_int8(float_model, example_inputs, calibration, task.workdir / name,
                                         reduce_range=reduce_range)
        path = written.path
        described = {"weights": f"{written.weights} (ONNX Runtime static quantization)",
                     "activations": "uint8 affine, per tensor, min-max over the calibration samples",
                     "runtime": "onnxruntime (CPUExecutionProvider)"}
        return formats.artifact(kind, name, path, **described), OnnxRuntimeModel(path)
    sizes = tuple(task.latency_batch_sizes)
    path = formats.format_of(kind).write(quantized, example_inputs, task.workdir / name, batch_sizes=sizes)
    return (formats.artifact(kind, name, path, weights="int8, as model_int8.pt2", activations="as model_int8.pt2",
                             batch_sizes=list(sizes)),
            formats.load(kind, path))


def agreement(runtime: torch.nn.Module, quantized: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> dict:
    """How closely another file's outputs follow the `.pt2`'s on the example batch (they differ by their own
    rounding or calibration): {"max_abs_diff_to_pt2", "cosine_to_pt2"}."""
    with evaluating(quantized):
        ours, theirs = output_tensor(quantized(*example_inputs)), output_tensor(runtime(*example_inputs))
    ours, theirs = ours.float().reshape(len(ours), -1), theirs.float().reshape(len(theirs), -1)
    cosine = torch.nn.functional.cosine_similarity(ours, theirs, dim=1).mean()
    return {"max_abs_diff_to_pt2": round(float((ours - theirs).abs().max()), 6),
            "cosine_to_pt2": round(float(cosine), 6)}
