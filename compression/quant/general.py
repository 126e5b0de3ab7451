"""The general PTQ path: any weight format, any observer, layer selection, bias correction, diagnostics, an
accuracy budget, and deployable artifacts (bit-packed safetensors; ONNX QDQ for integer formats).

Order of work: copy the model as a graph, drop dead branches, fold BatchNorm, quantize the embedding tables (they
run quantized with any quantized layer), insert per-layer input quantizers, calibrate activation ranges on the
float model, choose weight formats (spec, per-layer overrides, then the budget search), correct biases, measure
every layer and block, write the artifacts, and return the model rebuilt from the packed file, so the model the
next stage receives is byte for byte the one the user downloads.
"""

from __future__ import annotations

from compression import formats
from compression.context import RunContext
from compression.dead_branches import DroppedBranches, drop_dead_branches
from compression.io import export_model
from compression.modes import eval_mode
from compression.onnx_export import export_onnx_qdq
from compression.ptq.addmm_linear import addmm_as_linear_in_place
from compression.ptq.computed_weights import store_computed_weights
from compression.ptq.float_weights import (
    GENERAL_PATH_READERS,
    GENERAL_RECIPE,
    float_weight_report,
    float_weight_warning,
)
from compression.quant.blocks import block_sensitivity
from compression.quant.diagnostics import (
    describe,
    layer_report,
    meet_budget,
    output_sqnr,
    sensitivity,
    weight_sqnr,
)
from compression.quant.embedding_tables import EmbeddingTables, quantize_tables
from compression.quant.evaluate import Evaluator
from compression.quant.graph import (
    as_graph_module,
    find_layers,
    fold_batchnorm,
    layer_bits,
    select_layers,
)
from compression.quant.observers import make_observer
from compression.quant.packed import load_packed, write_packed
from compression.quant.simulation import QuantSimulation
from compression.quant.weights import WeightFormat
from compression.result import StageResult
from compression.specs.ptq import PTQSpec
from compression.task import Task

CALIBRATION_BATCH = 64
OUTPUT_SQNR_BATCHES = 2  # per-layer output SQNR keeps every layer's output of a batch twice: stay small


def build_simulation(spec: PTQSpec, model, task: Task, ctx: RunContext
                     ) -> tuple[QuantSimulation, DroppedBranches, EmbeddingTables]:
    gm = eval_mode(as_graph_module(model, task.example_inputs))
    dropped = drop_dead_branches(gm)  # an unused branch's layers would be quantized, reported and shipped
    store_computed_weights(gm)  # BiT's standardized convolution weights
    if addmm_as_linear_in_place(gm):
        # GPT-2's Conv1D layers are addmm calls, which find_layers does not take for layers: as linears they are
        # quantized like any other; the re-export gives the new nodes their traced shapes.
        gm = eval_mode(export_model(gm, task.example_inputs).module())
    folded = fold_batchnorm(gm) if spec.fold_batchnorm else {}
    layers = select_layers(find_layers(gm), spec.include, spec.exclude)
    if not layers:
        raise ValueError("no conv/linear layer left to quantize after include/exclude")
    observers = None
    if spec.activations is not None:
        act = spec.activations
        observers = {layer.name: make_observer(act.observer, act.bits, act.symmetric, act.percentile,
                                               act.averaging_constant, ctx.seed) for layer in layers}
    tables = quantize_tables(gm, spec.embeddings, {layer.weight_attr: layer.name for layer in layers})
    return QuantSimulation(gm, layers, observers, tables.quantized, folded), dropped, tables


def _reporting(batches: list, ctx: RunContext, phase: str):
    """Yield `batches`, reporting progress (and honouring cancellation) before each."""
    for index, batch in enumerate(batches):
        ctx.progress(phase, index, len(batches))
        yield batch
    ctx.progress(phase, len(batches), len(batches))


def initial_config(spec: PTQSpec, sim: QuantSimulation) -> dict[str, WeightFormat]:
    return {name: WeightFormat.from_spec(spec.weights, layer_bits(name, spec.weights.bits, spec.layer_bits))
            for name in sim.layers}


def apply_general_ptq(spec: PTQSpec, model, task: Task, ctx: RunContext) -> StageResult:
    ctx.progress("prepare", 0, 1)
    sim, dropped, tables = build_simulation(spec, model, task, ctx)
    calibration = [batch.inputs for batch in task.dataset.split(spec.calibration_split)
                   .batches(CALIBRATION_BATCH, limit=spec.calibration_samples)]
    sim.calibrate(_reporting(calibration, ctx, "calibrate"))
    config = requested = initial_config(spec, sim)
    if spec.bias_correction:
        sim.enable_bias_correction(config, _reporting(calibration, ctx, "bias_correction"))

    evaluate = Evaluator(task.dataset, task.eval_split, spec.selection_samples, task.reference, task.output_kind,
                         task.metric)
    with sim.configured({}) as float_model:
        float_metric = evaluate(float_model)
    drops = None
    if spec.sensitivity or spec.max_metric_drop is not None:
        drops = sensitivity(sim, config, evaluate, float_metric,
                            lambda step, total: ctx.progress("sensitivity", step, total))
    metrics: dict = {"metric_name": evaluate.name, "float_metric": round(float_metric, 2),
                     "dropped_branches": dropped.to_metrics()}
    if sim.folded_batch_norms:  # what a Hugging Face folder of the model writes as identities
        metrics["folded_batch_norms"] = sim.folded_batch_norms
    if spec.sensitivity:
        metrics["blocks"] = block_sensitivity(sim, config, evaluate, float_metric,
                                              lambda step, total: ctx.progress("block_sensitivity", step, total))
    if spec.max_metric_drop is not None:
        order = sorted(drops, key=lambda name: -drops[name])
        search = meet_budget(sim, config, evaluate, float_metric, spec.max_metric_drop, order,
                             spec.budget_allows_float, lambda step, total: ctx.progress("budget", step, total))
        config = search.config
        metrics["budget"] = {"max_metric_drop": spec.max_metric_drop, "met": search.budget_met,
                             "metric": round(search.metric, 2), "drop": round(float_metric - search.metric, 2),
                             "chosen": {name: describe(fmt) for name, fmt in config.items()},
                             "steps": search.steps}
        if not search.budget_met:
            metrics["warnings"] = [f"the PTQ budget max_metric_drop = {spec.max_metric_drop:g} was not met: the best "
                                   f"configuration found drops {evaluate.name} by "
                                   f"{float_metric - search.metric:.2f} points on the selection samples"
                                   + ("" if spec.budget_allows_float else "; budget_allows_float would keep more "
                                      "layers in float")]
    ctx.progress("diagnose", 0, 1)
    sim.configure(config)
    quantized_metric = evaluate(sim.gm)
    metrics.update(quantized_metric=round(quantized_metric, 2), metric_drop=round(float_metric - quantized_metric, 2))
    metrics["layers"] = layer_report(sim, config, weight_sqnr(sim, config),
                                     output_sqnr(sim, config, calibration[:OUTPUT_SQNR_BATCHES]), drops,
                                     requested)

    metrics["embeddings"] = tables.report(written=sim.tables_quantized)
    # a GRU's or a transposed conv's weights, stacked expert tensors: what no layer of this path reads stays float
    metrics["float_weights"] = float_weight_report(sim.gm, GENERAL_PATH_READERS)
    del metrics["float_weights"]["float_share"]  # the simulation holds every weight in float
    if mostly_float := float_weight_warning(metrics["float_weights"], GENERAL_RECIPE):
        metrics.setdefault("warnings", []).insert(0, mostly_float)

    ctx.progress("export", 0, 1)
    artifacts, deployed = write_artifacts(spec, sim, config, task, quantized_metric, metrics["embeddings"]["format"],
                                          metrics)
    metrics["artifacts"] = {artifact.name: artifact.metadata for artifact in artifacts}
    return StageResult(deployed, artifacts, metrics)


def _fp32_bytes(model) -> int:
    return sum(tensor.numel() * 4 for tensor in model.state_dict().values() if tensor.is_floating_point())


def write_artifacts(spec: PTQSpec, sim: QuantSimulation, config: dict, task: Task, metric: float,
                    table_storage: str = "fp32", metrics: dict | None = None):
    """The packed safetensors (always) and the ONNX QDQ model (integer weights, 8-bit or float activations), with
    the embedding tables the simulation runs quantized stored as integers in both."""
    quantized = {name: fmt for name, fmt in config.items() if fmt is not None}
    weights = {sim.layers[name].weight_attr: sim.quantized(name, fmt) for name, fmt in quantized.items()}
    reference_bytes = _fp32_bytes(task.reference)
    sim.configure(config)
    tables = sim.tables if sim.tables_quantized else {}
    packed_path = write_packed(task.workdir / "model_packed.safetensors", sim.gm, task.example_inputs,
                               weights | tables, lookup_tables=set(tables))
    artifacts = [formats.artifact("packed.safetensors", packed_path.name, packed_path)]
    integer_only = all(fmt.dtype == "int" for fmt in quantized.values())
    eight_bit_inputs = spec.activations is None or spec.activations.bits == 8
    if spec.export_onnx and integer_only and eight_bit_inputs:
        activations = {sim.layers[name].weight_attr: sim.input_quantizers[name].qparams
                       for name in quantized if sim.input_quantizers[name].qparams is not None}
        for quantizer in sim.input_quantizers.values():
            quantizer.mode = "off"  # the QDQ nodes take their place
        try:
            onnx_path = export_onnx_qdq(sim.gm, task.example_inputs, task.workdir / "model_qdq.onnx",
                                        weights | tables, activations)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the ONNX file is an extra: the stage's own artifacts stand
            # (torch.onnx could not decompose Grounding DINO's graph: a view of a transposed tensor)
            onnx_path = None
            reason = (str(exc).strip().splitlines() or [""])[0][:300]
            (metrics if metrics is not None else {}).setdefault("warnings", []).append(
                f"the ONNX QDQ model (model.onnx) was not written: torch.onnx could not export this model "
                f"({type(exc).__name__}: {reason}); the stage's other artifacts hold it")
        sim.configure(config)
        if onnx_path is not None:
            artifacts.append(formats.artifact("model.onnx", onnx_path.name, onnx_path))
    for artifact in artifacts:
        # Both files store the tables as integers (the ONNX model as int codes + DequantizeLinear before Gather).
        artifact.metadata |= {"metric": round(metric, 2), "embeddings": table_storage,
                              "size_bytes": artifact.size_bytes,
                              "compression_ratio": round(reference_bytes / artifact.size_bytes, 2)}
    return artifacts, load_packed(packed_path)
