"""`apply_prune`: the pruning stage of a job (spec `PruneSpec`, method "prune")."""

from __future__ import annotations

from torch import nn

from compression import formats
from compression.context import RunContext
from compression.half_precision import float_result
from compression.io import export_model, save_program
from compression.modes import eval_mode, is_exported
from compression.prune.finetune import finetune, gradual_finetune, lottery_ticket, recalibrate_batch_norm
from compression.prune.masks import WeightMasks, keep_top, prunable_weights, sparsity_report, weight_scores
from compression.prune.sparse_format import save_sparse
from compression.prune.structured import nothing_to_prune, plan_structured, prune_channels
from compression.prune.synflow import synflow_prune
from compression.result import StageResult
from compression.specs.prune import PruneSpec
from compression.task import Task


def apply_prune(spec: PruneSpec, model: nn.Module, task: Task, ctx: RunContext) -> StageResult:
    task.workdir.mkdir(parents=True, exist_ok=True)
    if spec.kind == "structured":
        return _structured(spec, model, task, ctx)
    return _unstructured(spec, model, task, ctx)


def _unstructured(spec: PruneSpec, model: nn.Module, task: Task, ctx: RunContext) -> StageResult:
    names = list(prunable_weights(model, spec.exclude))
    if not names:
        raise ValueError("the model has no conv/linear weights left to prune (check 'exclude')")
    masks = WeightMasks(model, names)
    training = None
    if spec.rewind_step is not None:
        training = lottery_ticket(model, spec, task, ctx, masks)
    elif spec.schedule == "gradual":
        training = gradual_finetune(model, spec, task, ctx, masks)
    else:
        if spec.criterion == "synflow":
            synflow_prune(model, masks, spec.sparsity, spec.synflow_iterations, task.example_inputs, ctx)
        else:
            masks.set(keep_top(weight_scores(masks, spec.criterion), spec.sparsity, spec.scope))
        if spec.recalibrate_batches:
            recalibrate_batch_norm(model, task, ctx, spec.recalibrate_batches)
        if spec.finetune is not None:
            training = finetune(model, spec, task, ctx, masks)
    metrics = sparsity_report(model, names)
    program = float_result(model, task.example_inputs, task.half_storage, metrics)
    dense_path = save_program(program, task.workdir / "pruned.pt2")
    pruned = eval_mode(program.module())
    state = pruned.state_dict()
    sparse_path = save_sparse(state, set(names), task.workdir / "pruned_sparse.safetensors")
    dense_bytes = sum(t.numel() * t.element_size() for t in state.values())
    metrics |= {"dense_weights_bytes": dense_bytes, "sparse_weights_bytes": sparse_path.stat().st_size,
                "weights_compression": round(dense_bytes / sparse_path.stat().st_size, 3)}
    _add_training(metrics, training)
    artifacts = [
        formats.artifact("model.pt2", "pruned.pt2", dense_path, sparsity=metrics["sparsity"]),
        formats.artifact("sparse.safetensors", "pruned_sparse.safetensors", sparse_path, sparse_tensors=names),
    ]
    return StageResult(pruned, artifacts, metrics)


def _structured(spec: PruneSpec, model: nn.Module, task: Task, ctx: RunContext) -> StageResult:
    # The dependency analysis reads the exported graph; a plain module is exported first.
    graph_module = model if is_exported(model) else export_model(eval_mode(model), task.example_inputs).module()
    parameters_before = _parameter_count(graph_module)
    plans, skipped = plan_structured(graph_module, spec.sparsity, spec.criterion, spec.exclude)
    if not plans:
        raise ValueError(nothing_to_prune(spec.sparsity, skipped))
    prune_channels(graph_module, plans)
    ctx.progress("prune", 1, 1, groups_pruned=len(plans))
    # Re-exporting refreshes the graph's shape metadata and gives a clean program of the smaller model.
    pruned = eval_mode(export_model(eval_mode(graph_module), task.example_inputs).module())
    if spec.recalibrate_batches:
        recalibrate_batch_norm(pruned, task, ctx, spec.recalibrate_batches)
    training = finetune(pruned, spec, task, ctx) if spec.finetune is not None else None
    turned = {}
    program = float_result(pruned, task.example_inputs, task.half_storage, turned)
    path = save_program(program, task.workdir / "pruned.pt2")
    pruned = eval_mode(program.module())
    parameters_after = _parameter_count(pruned)
    channels_before = sum(plan.group.size for plan in plans)
    channels_kept = sum(int(plan.keep.numel()) for plan in plans)
    metrics = {
        "parameters_before": parameters_before, "parameters": parameters_after,
        "parameter_reduction": round(1 - parameters_after / parameters_before, 6),
        "channel_sparsity": round(1 - channels_kept / channels_before, 6),
        "groups": [plan.describe() for plan in plans],
        "groups_kept_whole": [{"layers": list(dict.fromkeys(p.name for p in group.producers)), "channels": group.size,
                               "why": sorted(set(group.frozen_because)) or ["too few channels"]}
                              for group in skipped],
    } | turned
    _add_training(metrics, training)
    return StageResult(pruned, [formats.artifact("model.pt2", "pruned.pt2", path, parameters=parameters_after)],
                       metrics)


def _parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _add_training(metrics: dict, training) -> None:
    if training is not None:
        metrics["finetune"] = {"steps": training.steps, "final_loss": training.final_loss,
                               "resumed_from_step": training.resumed_from_step, **training.metrics}

