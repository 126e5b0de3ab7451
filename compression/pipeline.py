"""Run a job: load the upload, measure it, apply each stage in turn, measure every stage's model the same way.

Every model is measured identically (same split, same example inputs, same latency settings), so the before/after
numbers are comparable: the metric (accuracy with labels, else fidelity to the upload), the size of the file the
user would download, the parameter count and, if asked, latency per batch size.
"""

from __future__ import annotations

import copy
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch

from compression import formats
from compression.archive import DEFAULT_LIMITS, ArchiveLimits
from compression.context import Cancelled, RunContext
from compression.core_aten_layers import core_aten_layers
from compression.data import Dataset, Split
from compression.deflate import deflated_size
from compression.dry_run import dry_run
from compression.evaluate import KeptOutputs, device_of, evaluate, output_tensor
from compression.evaluation_budget import capped_evaluation
from compression.half_precision import HalfStorage, widened
from compression.index_inputs import check_index_ranges, embedding_rows
from compression.io import (
    batch_bound,
    export_model,
    input_dtypes,
    input_names,
    input_shapes,
    load_model,
    load_program,
    save_program,
)
from compression.measure import Timing, file_size, parameter_count, time_in_alternation
from compression.methods import apply_stage
from compression.modes import eval_mode, evaluating
from compression.output_kind import detect_output_kind
from compression.ptq.addmm_linear import weight_products_as_linear
from compression.ptq.computed_weights import store_factored_weights
from compression.ptq.quantize import drop_unreferenced_tensors
from compression.ptq.string_padding import even_conv_padding_in_place
from compression.ptq.weight_pieces import store_weight_pieces
from compression.quality import QualityBudgetExceeded, quality_warnings
from compression.repeatable import check_repeatable
from compression.result import Artifact
from compression.specs.common import EvaluationSpec
from compression.specs.metrics import chosen_metric
from compression.task import Task
from compression.tied_copies import tie_shared_parameters
from compression.upload_outputs import UploadOutputs, evaluation_batch_size, evaluation_runner

log = logging.getLogger(__name__)
EXAMPLE_BATCH = 8
# A causal LM's logits over a 32k vocabulary at 256 positions are 32 MiB per example: evaluated 256 at a time, one
# batch of them (and the upload's, compared with it) would take gigabytes.
MAX_EVALUATION_OUTPUT_BYTES = 256 * 1024**2
# Kinds of artifact that hold a whole model; a method lists its main one first.
MODEL_KIND_PREFIXES = ("model.", "packed.")


@dataclass
class StageOutcome:
    method: str
    metrics: dict  # evaluation of the stage's model, plus the method's own under "method_metrics"
    artifacts: list[Artifact]
    model: torch.nn.Module | None = field(default=None, repr=False)


@dataclass
class PipelineResult:
    baseline: dict
    stages: list[StageOutcome]
    dry_run: dict = field(default_factory=dict)  # what each stage's dry run checked (compression.dry_run)
    # The job's evaluation of another model of the upload's inputs and outputs (a stage's Hugging Face folder),
    # eagerly, on the split, settings and upload outputs the stages were measured with: {"metric_points", ...}.
    evaluate_model: Callable[[torch.nn.Module], dict] | None = field(default=None, repr=False)

    @property
    def final(self) -> dict:
        return self.stages[-1].metrics if self.stages else self.baseline

    @property
    def warnings(self) -> list[str]:
        return [f"stage {index} ({stage.method}): {warning}" for index, stage in enumerate(self.stages)
                for warning in stage.metrics.get("warnings", [])]

    def to_metrics(self) -> dict:
        """JSON-able summary: {"baseline": {...}, "stages": [{"method", "metrics", "artifacts"}], "final": {...},
        "warnings": [every stage's warnings, prefixed with the stage], "dry_run": {stage: what was checked}}."""
        stages = [{"method": s.method, "metrics": s.metrics,
                   "artifacts": [{"name": a.name, "kind": a.kind, "size_bytes": a.size_bytes} for a in s.artifacts]}
                  for s in self.stages]
        return {"baseline": self.baseline, "stages": stages, "final": self.final, "warnings": self.warnings,
                "dry_run": self.dry_run}


def run_pipeline(model_path: str | Path, dataset_path: str | Path, stages: list, evaluation: EvaluationSpec,
                 ctx: RunContext, workdir: str | Path, train_split: str = "train",
                 limits: ArchiveLimits = DEFAULT_LIMITS,
                 uploaded_models: Mapping[str, str | Path] | None = None,
                 on_measured: Callable[[dict], None] | None = None,
                 known_baseline: dict | None = None,
                 upload_outputs_file: str | Path | None = None,
                 keep_computed_weights: bool = False) -> PipelineResult:
    """Apply `stages` (StageSpecs) in order to the uploaded program; every stage starts from the previous model.

    The upload and the dataset are read under the archive rules and `limits` (`compression.archive`).
    `uploaded_models` maps the ids a stage may name (e.g. an uploaded distillation student) to `.pt2` files.
    `on_measured` gets the metrics measured so far (`PipelineResult.to_metrics()`) after the baseline and after each
    stage, so a job that fails later still has them. A stage whose metric drops more than
    `evaluation.max_metric_drop` points raises `QualityBudgetExceeded` once its metrics are measured.

    `known_baseline`: the upload's metric, size and parameters measured on these inputs and evaluation settings
    by an earlier run; its evaluation is then skipped (its latency is always timed afresh, by the stages).
    `upload_outputs_file`: where the upload's outputs on the evaluation split are kept for later runs with the
    same inputs and settings (`compression.upload_outputs`); read instead of running the upload when present.
    `keep_computed_weights`: leave layer weights that the graph computes from parameters (weight norm, spectral
    norm, a packed projection split at every call) as they are: a Hugging Face folder's job, whose architecture
    computes them from those parameters, so that stored ones could not be written back to its folder."""
    workdir = Path(workdir)
    resolve_model = _file_resolver(dict(uploaded_models or {}), limits)
    ctx.progress("load", 0, 1)
    program = load_program(model_path, limits)
    dataset = Dataset.load(dataset_path, input_names(program), input_dtypes(program), limits, input_shapes(program))
    check_index_ranges(dataset.splits.values(), embedding_rows(program, input_names(program)))
    # An upload exported with a bounded batch (Dim("batch", max=64)) refuses larger batches: evaluation,
    # calibration and teacher outputs are served in batches it accepts; training batches are checked by the dry run.
    dataset.limit_batches(batch_bound(program))
    eval_split = dataset.split(evaluation.split)
    example_inputs = eval_split.head(EXAMPLE_BATCH).inputs
    reference = eval_mode(program.module())
    tie_shared_parameters(reference)  # else every stage's program stores a tied table twice
    # Weight-normed and spectral-normed layers compute their weight from stored factors, cross-attention splits its
    # packed projection: each weight is stored, so every method finds the layer. (One-parameter computed weights
    # wait for int8 PTQ: BiT's standardized filters, stored for every method, have unit variance, and global
    # magnitude pruning then emptied its classifier instead.)
    computed = [] if keep_computed_weights else store_factored_weights(reference) + store_weight_pieces(reference)
    # A program decomposed to core ATen (`run_decompositions()`): its convolutions and linear layers as layer calls
    core_layers = core_aten_layers(reference)
    weight_products_as_linear(reference)  # Falcon's `x @ W.T` layers: linear layers for every method
    even_conv_padding_in_place(reference)  # EfficientNet's padding="same" convs: conv layers for every method
    # torch.export keeps every parameter of the module, read or not (BERT's pooler under last_hidden_state): no
    # method should compress, prune or count a weight no operation reads (a folder takes those from the upload).
    drop_unreferenced_tensors(reference)
    with evaluating(reference), torch.no_grad():
        first_output = output_tensor(reference(*example_inputs))
    check_repeatable(reference, example_inputs, first_output)
    # Each evaluation batch, and each kept output of the upload, at most MAX_EVALUATION_OUTPUT_BYTES of float32.
    eval_split.evaluation_max_batch = max(1, MAX_EVALUATION_OUTPUT_BYTES // max(1, 4 * first_output[0].numel()))
    per_position = first_output.dim() >= 3 and evaluation.output_kind != "regression"
    if per_position:  # [N, L] labels of [N, L, C] logits: a class per position (a token classifier's tags)
        dataset.label_per_position()
    output_kind = _output_kind(evaluation.output_kind, reference, first_output, dataset)
    metric = chosen_metric(evaluation.metric, output_kind, eval_split.has_labels)
    evaluation = evaluation.model_copy(update={"output_kind": output_kind, "metric": metric})
    # Independent labels: declared, or 0/1 label matrices (a multi-label Hugging Face classifier's text labels).
    multi_label = output_kind != "regression" and (evaluation.multi_label or not per_position and any(
        split.labels is not None and split.labels.ndim == 2 for split in dataset.splits.values()))
    ctx.progress("load", 1, 1)
    # Seconds, not minutes: every stage's preconditions on the real model and two rows, before any evaluation.
    checked = dry_run(stages, reference, Task(dataset, reference, example_inputs, workdir / "dry_run",
                                              train_split=train_split, eval_split=evaluation.split,
                                              resolve_model=resolve_model, output_kind=output_kind, metric=metric,
                                              multi_label=multi_label),
                      ctx)

    # A large model is evaluated on as many examples as a compute budget allows, unless the user chose.
    evaluation, capped = capped_evaluation(reference, example_inputs, eval_split, evaluation)
    noted = {"evaluation_capped": capped} if capped else {}
    evaluation, skipped = _latency_within_bound(evaluation, dataset.max_batch)
    noted |= {"latency_batch_sizes_skipped": skipped} if skipped else {}
    noted |= {"ignored_arrays": dataset.ignored_arrays} if dataset.ignored_arrays else {}
    noted |= {"core_aten_layers": core_layers} if core_layers else {}
    noted |= {"computed_weights_stored": computed} if computed else {}

    # The upload's latency is not timed here: each stage times it in alternation with its own model, and the
    # first of those timings becomes the baseline's.
    upload_outputs = UploadOutputs(eval_split, evaluation, upload_outputs_file)
    if known_baseline is not None:
        baseline = dict(known_baseline) | {"reused": True}
    else:
        keep = upload_outputs.keeper()
        baseline = _measure(reference, None, eval_split, example_inputs, evaluation.model_copy(
            update={"latency": evaluation.latency and not stages}), ctx, keep_outputs=keep)
        upload_outputs.kept(keep)
        baseline |= {"output_kind": output_kind, "size_bytes": file_size(model_path),
                     "deflated_size_bytes": deflated_size(model_path),
                     "parameters": parameter_count(reference), **noted}
    outcomes = []

    def report_measured() -> None:
        if on_measured is not None:
            on_measured(PipelineResult(baseline, outcomes, checked).to_metrics())

    report_measured()

    # Methods may change the model they get; the reference (teacher, fidelity target) must stay the upload.
    model = _copy_model(reference)
    for index, spec in enumerate(stages):
        stage_ctx = ctx.for_stage(f"{index}:{spec.method}")
        stage_dir = workdir / f"{index}_{spec.method}"
        stage_dir.mkdir(parents=True, exist_ok=True)
        task = Task(dataset, reference, example_inputs, stage_dir, train_split=train_split,
                    eval_split=evaluation.split, resolve_model=resolve_model, output_kind=output_kind,
                    metric=metric, latency_batch_sizes=tuple(evaluation.latency_batch_sizes),
                    half_storage=HalfStorage.of(model), multi_label=multi_label)
        started = time.monotonic()
        result = apply_stage(spec, widened(model), task, stage_ctx)
        wall_time = time.monotonic() - started
        artifacts = list(result.artifacts)
        main = _main_model_artifact(artifacts) or _export_fallback(result.model, example_inputs, stage_dir, artifacts)

        stage_ctx.progress("evaluate", 0, 1)
        metrics = _measure(result.model, reference, eval_split, example_inputs, evaluation, stage_ctx,
                           expected=upload_outputs.outputs(reference), runtimes=result.runtimes,
                           model_name=main.name)
        if "latency_ms" in metrics and "latency_ms" not in baseline:
            baseline |= {"latency_ms": metrics["reference_latency_ms"], "latency_compiled": evaluation.compile,
                         "latency_reliable": metrics["latency_reliable"]}
        metrics |= {"size_bytes": main.size_bytes, "model_artifact": main.name,
                    "compression_ratio": baseline["size_bytes"] / main.size_bytes,
                    **_ratio_vs_deflated_upload(baseline, main.size_bytes),
                    "parameters": parameter_count(result.model), "wall_time_s": round(wall_time, 3),
                    "device": str(device_of(result.model)),
                    "method_metrics": result.metrics, **noted}
        metrics["metric_drop"] = round(baseline["metric_points"] - metrics["metric_points"], 4)
        warnings = [*result.metrics.get("warnings", []), *quality_warnings(baseline, metrics, evaluation)]
        if warnings:
            metrics["warnings"] = warnings
        outcomes.append(StageOutcome(spec.method, metrics, artifacts, result.model))
        report_measured()
        if evaluation.max_metric_drop is not None and metrics["metric_drop"] > evaluation.max_metric_drop:
            raise QualityBudgetExceeded(index, spec.method, metrics, evaluation.max_metric_drop)
        model = result.model

    # The upload's kept outputs stand for the upload: holding it for the folders would keep a whole model in
    # memory while they are written (only outputs too large to keep need it).
    expected = upload_outputs.outputs(reference) if outcomes else None  # kept by the stages' evaluations
    upload = reference if expected is None else None

    def evaluate_model(candidate: torch.nn.Module) -> dict:
        return evaluate(candidate, eval_split, reference=upload, batch_size=evaluation_batch_size(evaluation),
                        max_samples=evaluation.max_samples, output_kind=output_kind, metric=metric,
                        expected=expected)

    return PipelineResult(baseline, outcomes, checked, evaluate_model)


def _output_kind(declared: str | None, reference: torch.nn.Module, output: torch.Tensor, dataset: Dataset) -> str:
    """The declared output kind, else 'regression' for a dataset labelled with values, else the kind detected from
    the reference's `output`. A regression job reads every label as a value (ratings 1..5 included)."""
    if declared is None and dataset.has_label_values:
        declared = "regression"
    if declared is None:
        return detect_output_kind(reference, output)
    if declared != "regression" and dataset.has_label_values:
        raise ValueError(f"the dataset's labels are values (floats that are not class indices), which a regression "
                         f"model predicts, but evaluation.output_kind is '{declared}'; set it to 'regression', or "
                         "label the examples with class indices")
    if declared == "regression":
        dataset.label_as_values()
    return declared


def _latency_within_bound(evaluation: EvaluationSpec, max_batch: int | None) -> tuple[EvaluationSpec, list[int]]:
    """Latency is timed only at the batch sizes the upload accepts (the largest it accepts when none is); the
    sizes left out are reported, not failed on: the timing is a side measurement of the job."""
    if max_batch is None or max(evaluation.latency_batch_sizes) <= max_batch:
        return evaluation, []
    kept = [size for size in evaluation.latency_batch_sizes if size <= max_batch] or [max_batch]
    skipped = [size for size in evaluation.latency_batch_sizes if size > max_batch]
    return evaluation.model_copy(update={"latency_batch_sizes": kept}), skipped


def _copy_model(model: torch.nn.Module) -> torch.nn.Module:
    """An independent copy: cheaper than loading the file again (parsing a program with dynamic dims takes
    seconds)."""
    with warnings.catch_warnings():  # torch's own pytree specs warn about its deprecated LeafSpec when copied
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(model)


def _file_resolver(paths: dict[str, str | Path], limits: ArchiveLimits):
    def resolve(model_id: str) -> torch.nn.Module:
        if model_id not in paths:
            raise ValueError(f"model {model_id} was not provided to this run (uploaded_models)")
        return load_model(paths[model_id], limits)
    return resolve


def _measure(model: torch.nn.Module, reference: torch.nn.Module | None, split: Split,
             example_inputs: tuple[torch.Tensor, ...], evaluation: EvaluationSpec, ctx: RunContext,
             expected: list[torch.Tensor] | None = None, keep_outputs: KeptOutputs | None = None,
             runtimes: dict[str, torch.nn.Module] | None = None, model_name: str = "model") -> dict:
    """Quality (with fidelity to `reference`, or to its outputs `expected`) and, if asked, latency; a stage's
    model is timed in alternation with the reference, so its speedup compares two timings taken under the same
    machine load. `keep_outputs` receives the model's outputs on the split (the upload's, for the stages).
    `runtimes` (other deployable files of the stage, loaded) are timed in the same rounds; the model's file is
    `model_name`."""
    ctx.progress("evaluate", 0, 1)
    # The upload's own fidelity (100 points) is only worth computing when the job's metric is a fidelity one.
    fidelity_to = reference if reference is not None else (None if evaluation.metric == "accuracy" else model)
    metrics = _evaluate(model, split, None if expected is not None else fidelity_to, evaluation, expected,
                        keep_outputs)
    ctx.progress("evaluate", 1, 1)
    if not evaluation.latency:
        return metrics
    models = {"model": model} if reference is None else {"model": model, "reference": reference}
    models |= {f"{RUNTIME_PREFIX}{name}": runtime for name, runtime in (runtimes or {}).items()}
    sizes = evaluation.latency_batch_sizes
    timings: dict[str, dict[int, Timing]] = {name: {} for name in models}
    ctx.progress("latency", 0, len(sizes))
    try:
        for step, batch_size in enumerate(sizes, start=1):
            measured = time_in_alternation(models, example_inputs, [batch_size], evaluation.compile)
            for name in models:
                timings[name][batch_size] = measured[name][batch_size]
            ctx.progress("latency", step, len(sizes))
    except Cancelled:
        raise
    except Exception as exc:  # a model that compressed well but cannot be compiled still is a result
        metrics["latency_error"] = f"{type(exc).__name__}: {exc}"[:1000]
        return metrics
    runtime_timings = {name.removeprefix(RUNTIME_PREFIX): timings.pop(name) for name in list(timings)
                       if name.startswith(RUNTIME_PREFIX)}
    metrics |= latency_metrics(timings, evaluation.compile)
    if runtime_timings:
        metrics |= deployable_latency_metrics(model_name, timings["model"], runtime_timings)
    return metrics


RUNTIME_PREFIX = "file:"


def deployable_latency_metrics(model_name: str, model_timings: dict[int, Timing],
                               runtime_timings: dict[str, dict[int, Timing]]) -> dict:
    """The stage's deployable files side by side: "artifact_latency_ms" {file: {batch size: median ms}} (the
    model's own file timed as the stage's model, compiled; the others as they run), "artifact_latency"
    (each timing's details) and "fastest_artifact" {batch size: file}, given only at batch sizes where every
    figure is reliable ("fastest_artifact_unreliable" says why elsewhere)."""
    files = {model_name: model_timings, **runtime_timings}
    sizes = list(model_timings)
    metrics: dict = {"artifact_latency_ms": {name: {str(b): t.median_ms for b, t in per_batch.items()}
                                             for name, per_batch in files.items()},
                     "artifact_latency": {name: {str(b): t.to_json() for b, t in per_batch.items()}
                                          for name, per_batch in files.items()},
                     "fastest_artifact": {}}
    for b in sizes:
        unreliable = [per_batch[b].reason for per_batch in files.values() if not per_batch[b].reliable]
        if unreliable:
            metrics.setdefault("fastest_artifact_unreliable", {})[str(b)] = unreliable[0]
        else:
            metrics["fastest_artifact"][str(b)] = min(files, key=lambda name: files[name][b].median_ms)
    return metrics


def _evaluate(model: torch.nn.Module, split: Split, reference: torch.nn.Module | None, evaluation: EvaluationSpec,
              expected: list[torch.Tensor] | None, keep_outputs: KeptOutputs | None) -> dict:
    """`evaluate`, in the model's compiled form when the job times compiled models (`compression.upload_outputs`);
    a model that cannot be compiled is evaluated eagerly (its timing then reports why it failed)."""
    settings = dict(reference=reference, batch_size=evaluation_batch_size(evaluation),
                    max_samples=evaluation.max_samples, output_kind=evaluation.output_kind,
                    metric=evaluation.metric, expected=expected)
    run = evaluation_runner(model, evaluation)
    if run is not None:
        try:
            return evaluate(model, split, run=run, keep_outputs=keep_outputs, **settings) | {
                "evaluated_compiled": True}
        except Cancelled:
            raise
        except Exception as exc:
            log.info("evaluating the compiled model failed (%s: %s); evaluating it eagerly", type(exc).__name__, exc)
            if keep_outputs is not None:
                keep_outputs.batches, keep_outputs.bytes = [], 0
    return evaluate(model, split, keep_outputs=keep_outputs, **settings) | {"evaluated_compiled": False}


def latency_metrics(timings: dict[str, dict[int, Timing]], compiled: bool) -> dict:
    """Medians per batch size (string keys, so the dict reads the same after a JSON round trip), each timing's
    spread and load under "latency", and a speedup only when every figure behind it is reliable; otherwise
    "latency_unreliable" says why and no speedup is presented."""
    metrics = {"latency_ms": {str(b): t.median_ms for b, t in timings["model"].items()},
               "latency": {str(b): {name: timings[name][b].to_json() for name in timings} for b in timings["model"]},
               "latency_compiled": compiled}
    if "reference" in timings:
        metrics["reference_latency_ms"] = {str(b): t.median_ms for b, t in timings["reference"].items()}
    reasons = [t.reason for per_batch in timings.values() for t in per_batch.values() if not t.reliable]
    metrics["latency_reliable"] = not reasons
    if reasons:
        metrics["latency_unreliable"] = reasons[0]
    elif "reference" in timings:
        metrics["speedup"] = {b: metrics["reference_latency_ms"][b] / ms for b, ms in metrics["latency_ms"].items()}
    return metrics


def _ratio_vs_deflated_upload(baseline: dict, size_bytes: int) -> dict:
    """The ratio against the upload deflated as our `.pt2` files are (`compression.deflate`): the part of the
    compression a zip tool would have given is not ours. Absent for baselines measured before it was recorded."""
    deflated = baseline.get("deflated_size_bytes")
    return {"compression_ratio_vs_deflated_upload": deflated / size_bytes} if deflated else {}


def _main_model_artifact(artifacts: list[Artifact]) -> Artifact | None:
    return next((a for a in artifacts if a.kind.startswith(MODEL_KIND_PREFIXES)), None)


def _export_fallback(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], directory: Path,
                     artifacts: list[Artifact]) -> Artifact:
    """A stage that wrote no model file still hands the user one: its model exported to `model.pt2`."""
    path = save_program(export_model(eval_mode(model), example_inputs), directory / "model.pt2")
    artifact = formats.artifact("model.pt2", "model.pt2", path, written_by="pipeline")
    artifacts.append(artifact)
    return artifact
