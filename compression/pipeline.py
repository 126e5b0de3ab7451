"""Run a job: load the upload, measure it, apply each stage in turn, measure every stage's model the same way.

Every model is measured identically (same split, same example inputs, same latency settings), so the before/after
numbers are comparable: the metric (accuracy with labels, else fidelity to the upload), the size of the file the
user would download, the parameter count and, if asked, latency per batch size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from compression import formats
from compression.archive import DEFAULT_LIMITS, ArchiveLimits
from compression.context import Cancelled, RunContext
from compression.data import Dataset, Split
from compression.evaluate import evaluate
from compression.io import export_model, input_dtypes, input_names, load_model, load_program, save_program
from compression.measure import compare_latency, file_size, parameter_count
from compression.methods import apply_stage
from compression.modes import eval_mode
from compression.result import Artifact
from compression.specs.common import EvaluationSpec
from compression.task import Task

EXAMPLE_BATCH = 8
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

    @property
    def final(self) -> dict:
        return self.stages[-1].metrics if self.stages else self.baseline

    def to_metrics(self) -> dict:
        """JSON-able summary: {"baseline": {...}, "stages": [{"method", "metrics", "artifacts"}], "final": {...}}."""
        stages = [{"method": s.method, "metrics": s.metrics,
                   "artifacts": [{"name": a.name, "kind": a.kind, "size_bytes": a.size_bytes} for a in s.artifacts]}
                  for s in self.stages]
        return {"baseline": self.baseline, "stages": stages, "final": self.final}


def run_pipeline(model_path: str | Path, dataset_path: str | Path, stages: list, evaluation: EvaluationSpec,
                 ctx: RunContext, workdir: str | Path, train_split: str = "train",
                 limits: ArchiveLimits = DEFAULT_LIMITS,
                 uploaded_models: Mapping[str, str | Path] | None = None) -> PipelineResult:
    """Apply `stages` (StageSpecs) in order to the uploaded program; every stage starts from the previous model.

    The upload and the dataset are read under the archive rules and `limits` (`compression.archive`).
    `uploaded_models` maps the ids a stage may name (e.g. an uploaded distillation student) to `.pt2` files."""
    workdir = Path(workdir)
    resolve_model = _file_resolver(dict(uploaded_models or {}), limits)
    ctx.progress("load", 0, 1)
    program = load_program(model_path, limits)
    dataset = Dataset.load(dataset_path, input_names(program), input_dtypes(program), limits)
    eval_split = dataset.split(evaluation.split)
    example_inputs = eval_split.head(EXAMPLE_BATCH).inputs
    reference = eval_mode(program.module())
    ctx.progress("load", 1, 1)

    baseline = _measure(reference, None, eval_split, example_inputs, evaluation, ctx)
    baseline |= {"size_bytes": file_size(model_path), "parameters": parameter_count(reference)}

    # Methods may change the model they get; the reference (teacher, fidelity target) must stay the upload.
    model = eval_mode(load_program(model_path, limits).module())
    outcomes = []
    for index, spec in enumerate(stages):
        stage_ctx = ctx.for_stage(f"{index}:{spec.method}")
        stage_dir = workdir / f"{index}_{spec.method}"
        stage_dir.mkdir(parents=True, exist_ok=True)
        task = Task(dataset, reference, example_inputs, stage_dir, train_split=train_split,
                    eval_split=evaluation.split, resolve_model=resolve_model)
        started = time.monotonic()
        result = apply_stage(spec, model, task, stage_ctx)
        wall_time = time.monotonic() - started
        artifacts = list(result.artifacts)
        main = _main_model_artifact(artifacts) or _export_fallback(result.model, example_inputs, stage_dir, artifacts)

        metrics = _measure(result.model, reference, eval_split, example_inputs, evaluation, stage_ctx)
        if "latency_ms" in metrics:
            metrics["speedup"] = {b: metrics["reference_latency_ms"][b] / ms
                                  for b, ms in metrics["latency_ms"].items()}
        metrics |= {"size_bytes": main.size_bytes, "model_artifact": main.name,
                    "compression_ratio": baseline["size_bytes"] / main.size_bytes,
                    "parameters": parameter_count(result.model), "wall_time_s": round(wall_time, 3),
                    "method_metrics": result.metrics}
        outcomes.append(StageOutcome(spec.method, metrics, artifacts, result.model))
        model = result.model
    return PipelineResult(baseline, outcomes)


def _file_resolver(paths: dict[str, str | Path], limits: ArchiveLimits):
    def resolve(model_id: str) -> torch.nn.Module:
        if model_id not in paths:
            raise ValueError(f"model {model_id} was not provided to this run (uploaded_models)")
        return load_model(paths[model_id], limits)
    return resolve


def _measure(model: torch.nn.Module, reference: torch.nn.Module | None, split: Split,
             example_inputs: tuple[torch.Tensor, ...], evaluation: EvaluationSpec, ctx: RunContext) -> dict:
    """Quality (with fidelity to `reference`) and, if asked, latency; a stage's model is timed in alternation
    with the reference, so its speedup compares two timings taken under the same machine load."""
    ctx.progress("evaluate", 0, 1)
    # The upload's own fidelity (1.0) is only worth computing when there are no labels to report accuracy with.
    fidelity_to = reference if reference is not None else (None if split.has_labels else model)
    metrics = evaluate(model, split, reference=fidelity_to, max_samples=evaluation.max_samples)
    ctx.progress("evaluate", 1, 1)
    if not evaluation.latency:
        return metrics
    models = {"model": model} if reference is None else {"model": model, "reference": reference}
    sizes = evaluation.latency_batch_sizes
    timings: dict[str, dict[str, float]] = {name: {} for name in models}
    ctx.progress("latency", 0, len(sizes))
    try:
        for step, batch_size in enumerate(sizes, start=1):
            measured = compare_latency(models, example_inputs, [batch_size], evaluation.compile)
            for name in models:
                # String keys, so the dict reads the same before and after a JSON round trip.
                timings[name][str(batch_size)] = measured[name][batch_size]
            ctx.progress("latency", step, len(sizes))
    except Cancelled:
        raise
    except Exception as exc:  # a model that compressed well but cannot be compiled still is a result
        metrics["latency_error"] = f"{type(exc).__name__}: {exc}"[:1000]
        return metrics
    metrics["latency_ms"] = timings["model"]
    if reference is not None:
        metrics["reference_latency_ms"] = timings["reference"]
    metrics["latency_compiled"] = evaluation.compile
    return metrics


def _main_model_artifact(artifacts: list[Artifact]) -> Artifact | None:
    return next((a for a in artifacts if a.kind.startswith(MODEL_KIND_PREFIXES)), None)


def _export_fallback(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...], directory: Path,
                     artifacts: list[Artifact]) -> Artifact:
    """A stage that wrote no model file still hands the user one: its model exported to `model.pt2`."""
    path = save_program(export_model(eval_mode(model), example_inputs), directory / "model.pt2")
    artifact = formats.artifact("model.pt2", "model.pt2", path, written_by="pipeline")
    artifacts.append(artifact)
    return artifact
