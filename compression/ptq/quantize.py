"""Static int8 quantization of a model with torchao's pt2e flow and the x86 inductor quantizer.

export -> dead branches dropped (`compression.dead_branches`) -> 1-D convolutions as 2-D ones (`conv1d.py`, the
quantizer's patterns are 2-D) and (k, 1) convolutions over one-wide inputs turned to (1, k) (`conv_orientation.py`,
oneDNN's fast orientation), long kernels' padding made a separate op (`explicit_padding.py`, oneDNN's fast int8
path) -> optional SmoothQuant (`smoothquant.py`) ->
`prepare_pt2e` (observers after each quantizable op; conv+batch norm folded) -> calibration forward
passes -> `convert_pt2e` (weights stored as int8 with per-channel scales, activations wrapped in
quantize/dequantize pairs with calibrated scale and zero point). The result is a Q/DQ graph: in eager mode it
computes in fp32 (slower than the original); under `torch.compile` with inductor freezing, inductor matches
dq -> conv/linear -> q patterns and runs oneDNN int8 kernels.

Numerics (`get_default_x86_inductor_quantization_config`): weights int8 symmetric per output channel (min-max
observer), activations uint8 affine per tensor (histogram observer, which picks the clipping range minimising
the quantization error; 0..127 instead of 0..255 with `reduce_range`, `int8_kernels.py`), biases fp32;
embedding tables int8 per row or 4-bit per group (`embeddings.py`), rewritten after conversion since the x86
quantizer leaves them in fp32.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

import torch
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
    QUANT_ANNOTATION_KEY,
    X86InductorQuantizer,
    _X86InductorQuantizationAnnotation,
    get_default_x86_inductor_quantization_config,
    propagation_quantizable_ops,
)

from compression.dead_branches import drop_dead_branches
from compression.errors import check_finite_range
from compression.io import export_model, exported_copy
from compression.modes import eval_mode
from compression.ptq.addmm_linear import addmm_as_linear
from compression.ptq.batch_norm_affine import batch_norms_as_affine
from compression.ptq.computed_weights import store_computed_weights
from compression.ptq.conv1d import conv1d_as_conv2d
from compression.ptq.conv_orientation import tall_convs_on_their_side
from compression.ptq.embeddings import EmbeddingFormat, quantize_embeddings
from compression.ptq.explicit_padding import pad_long_kernels_explicitly
from compression.ptq.functional_layers import mark_functional_layers
from compression.ptq.graph_rewrites import holds_float
from compression.ptq.kernelless_weights import quantize_kernelless_weights
from compression.ptq.scalar_adds import scalar_adds_after_layers
from compression.ptq.smoothquant import smooth_linears
from compression.ptq.string_padding import numeric_conv_padding
from compression.quant.graph import conv_batch_norm_pairs, find_layers, select_layers

QUANTIZED_WEIGHT_OPS = ("dequantize_per_channel",)


def quantize_int8(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                  calibration: Iterable[tuple[torch.Tensor, ...]],
                  on_batch: Callable[[int], None] | None = None, *,
                  embeddings: EmbeddingFormat | None = EmbeddingFormat(), smoothquant_alpha: float | None = None,
                  include: list[str] = (), exclude: list[str] = (), report: dict | None = None,
                  reduce_range: bool = False) -> torch.fx.GraphModule:
    """An int8 copy of `model` calibrated on the input tuples of `calibration`; `model` is only put in eval mode.

    `on_batch(i)` is called after the i-th calibration batch (progress, cancellation). `embeddings` None keeps
    embedding tables in fp32. With `smoothquant_alpha`, the calibration batches are also used (first) to compute
    the smoothing factors. `include` / `exclude` (fnmatch patterns of layer names, as on the general path) choose
    the conv/linear layers to quantize; the others stay float. `report`, when given, receives what was done beyond
    quantizing: "dropped_branches", "numeric_conv_padding" (string-padded convs), "conv1d_as_conv2d",
    "addmm_as_linear" and "tall_convs_on_their_side" (how many),
    "explicitly_padded" (the long-kernel convs whose padding became a separate op), "computed_weights_stored"
    (layer weights computed from one parameter, stored computed: `computed_weights.py`), "folded_batch_norms"
    (the norms `prepare_pt2e` folds into convs, for a Hugging Face folder), "functional_layers" (the
    modules whose linear/conv calls the quantizer would have left float, `functional_layers.py`), "embeddings",
    "smoothquant", "float_layers" (the layers left float, when patterns were given), "weights_int8_without_kernel"
    (GRU/LSTM, Conv3d and transposed-conv weights stored int8, `kernelless_weights.py`) and "activation_range".
    `reduce_range` True calibrates activations to 0..127 (exact on CPUs without VNNI, `int8_kernels.py`), False
    to 0..255.
    """
    report = {} if report is None else report
    if smoothquant_alpha is not None:
        calibration = list(calibration)
    prepared = prepare_int8(model, example_inputs, calibration, smoothquant_alpha=smoothquant_alpha,
                            include=include, exclude=exclude, report=report, reduce_range=reduce_range)
    calibrated = False
    with torch.no_grad():
        for index, inputs in enumerate(calibration, start=1):
            prepared(*inputs)
            calibrated = True
            if on_batch is not None:
                on_batch(index)
    if calibrated:
        _check_observed_ranges(prepared)
    if affine := batch_norms_as_affine(prepared):
        report["batch_norms_as_affine"] = affine
    converted = convert_pt2e(prepared)
    # Flips the mode flags in place; torchao's move_exported_model_to_eval re-traces its replacement patterns
    # (1-2 s per call) even when, as here (exported from a model in eval mode), there is nothing to replace.
    eval_mode(converted)
    if embeddings is not None:
        report["embeddings"] = quantize_embeddings(converted, embeddings)
    if kernelless := quantize_kernelless_weights(converted):
        report["weights_int8_without_kernel"] = kernelless
    drop_unreferenced_tensors(converted)
    return converted


def prepare_int8(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...],
                 calibration: list[tuple[torch.Tensor, ...]] | None = None, *, smoothquant_alpha: float | None = None,
                 include: list[str] = (), exclude: list[str] = (), report: dict | None = None,
                 reduce_range: bool = False) -> torch.fx.GraphModule:
    """The first half of `quantize_int8`: the exported graph without dead branches (smoothed with `calibration`
    when `smoothquant_alpha` is given), with the quantizer's observers inserted, ready to calibrate. The job's dry
    run (`compression.dry_run`) runs this and one forward pass, which is where models the quantizer cannot handle
    fail."""
    report = {} if report is None else report
    eval_mode(model)
    graph = exported_copy(model, example_inputs)
    report["dropped_branches"] = drop_dead_branches(graph).to_metrics()
    if computed := store_computed_weights(graph):  # BiT's standardized convolution weights
        report["computed_weights_stored"] = computed
    if string_padded := numeric_conv_padding(graph):  # first: the 1-D rewrite reads numeric padding only
        report["numeric_conv_padding"] = string_padded
    if conv1d_count := conv1d_as_conv2d(graph):
        report["conv1d_as_conv2d"] = conv1d_count
    if linearized := addmm_as_linear(graph):
        report["addmm_as_linear"] = linearized
    if turned := tall_convs_on_their_side(graph):  # reads traced shapes: the rewritten 1-D convs have none yet
        report["tall_convs_on_their_side"] = turned
    if padded := pad_long_kernels_explicitly(graph):
        report["explicitly_padded"] = padded
    if string_padded or conv1d_count or linearized or turned or padded:
        graph = export_model(graph, example_inputs).module()
    if smoothquant_alpha is not None:
        report["smoothquant"] = smooth_linears(graph, calibration, smoothquant_alpha)
        # The quantizer reads every node's traced shape (meta "val"), which the inserted nodes lack.
        graph = export_model(graph, example_inputs).module()
    separate_repeated_module_calls(graph)
    if scalar_adds := scalar_adds_after_layers(graph):
        report["scalar_adds_after_layers"] = scalar_adds
    if functional := mark_functional_layers(graph):
        report["functional_layers"] = functional
    float_nodes = set()
    if include or exclude:
        float_nodes, report["float_layers"] = float_layer_nodes(graph, list(include), list(exclude))
    report["activation_range"] = "0..127" if reduce_range else "0..255"
    config = get_default_x86_inductor_quantization_config(reduce_range=reduce_range)
    quantizer = FloatOnlyX86Quantizer(float_nodes).set_global(config)
    # what a Hugging Face folder of the model writes as identities (`hf_folder_export`): the norms prepare folds
    if folded := {conv: details for conv, details in conv_batch_norm_pairs(graph).values()}:
        report["folded_batch_norms"] = folded
    return prepare_pt2e(graph, quantizer)


def float_layer_nodes(graph: torch.fx.GraphModule, include: list[str], exclude: list[str]
                      ) -> tuple[set[str], list[str]]:
    """(names of the conv/linear calls to leave float, their layer names) for the patterns; layers are named and
    matched as on the general path (`compression.quant.graph`), which refuses a pattern matching no layer. Node
    names survive `prepare_pt2e`'s batch norm folding, which is where the quantizer reads them."""
    layers = find_layers(graph)
    chosen = {id(layer.node) for layer in select_layers(layers, include, exclude)}
    if not chosen:
        raise ValueError("no conv/linear layer left to quantize after include/exclude")
    kept = [layer for layer in layers if id(layer.node) not in chosen]
    return {layer.node.name for layer in kept}, list(dict.fromkeys(layer.name for layer in kept))


class FloatOnlyX86Quantizer(X86InductorQuantizer):
    """The x86 quantizer without observers on integer tensors, and with chosen layers left float.

    Integer tensors: it annotates `add` and `mul` whatever their dtype, and RoBERTa-family models compute position
    ids as `cumsum(mask) * mask + padding_idx` in int32, whose histogram observer fails ("histogram_cpu" not
    implemented for 'Int'); integer values are indices, not activations to quantize.

    Float layers (`float_nodes`, names of conv/linear calls): marked as annotated with no quantization before the
    quantizer's own pass (torchao's mark for a `None` config). Its fusion patterns (conv+relu, linear+add, ...)
    skip any pattern holding an annotated node, and its propagation to maxpool/cat/... only follows quantized
    outputs, so no observer lands on the layer's input, weight or output: no quantize/dequantize pair is left
    around it. A maxpool/cat/flatten/average pool is annotated int8 in, int8 out when its input comes from a
    quantized op; one whose output then feeds no quantized op (e.g. only a float layer) would round values for
    nothing, so it is left float too."""

    def __init__(self, float_nodes: set[str] = frozenset()):
        super().__init__()
        self.float_nodes = set(float_nodes)

    def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        for node in model.graph.nodes:
            if node.name in self.float_nodes:
                node.meta[QUANT_ANNOTATION_KEY] = _X86InductorQuantizationAnnotation(_annotated=True)
        model = super().annotate(model)
        for node in model.graph.nodes:
            annotation = node.meta.get("quantization_annotation")
            if annotation is None:
                continue
            annotation.input_qspec_map = {arg: spec for arg, spec in annotation.input_qspec_map.items()
                                          if holds_float(arg)}
            if not holds_float(node):
                annotation.output_qspec = None
        if self.float_nodes:
            _unquantize_pass_through_ops_feeding_no_quantized_op(model)
        return model


def _unquantize_pass_through_ops_feeding_no_quantized_op(model: torch.fx.GraphModule) -> None:
    changed = True
    while changed:  # a chain (maxpool -> flatten -> float linear) is undone from its end
        changed = False
        for node in model.graph.nodes:
            annotation = node.meta.get(QUANT_ANNOTATION_KEY)
            if (node.target in propagation_quantizable_ops and annotation is not None
                    and annotation._is_output_of_quantized_pattern
                    and not any(node in _input_specs(user) for user in node.users)):
                node.meta[QUANT_ANNOTATION_KEY] = _X86InductorQuantizationAnnotation(_annotated=True)
                changed = True


def _input_specs(node: torch.fx.Node) -> dict:
    annotation = node.meta.get(QUANT_ANNOTATION_KEY)
    return annotation.input_qspec_map if annotation is not None else {}


def _check_observed_ranges(prepared: torch.fx.GraphModule) -> None:
    """Refuse to convert when an observer saw NaN or Inf: the int8 model would get a NaN or default scale.

    Every observer of the traced graph runs on every calibration batch, so one still at its initial range
    (+inf, -inf) ignored all it saw (the histogram observer drops batches holding Inf)."""
    for name, module in prepared.named_modules():
        lo, hi = getattr(module, "min_val", None), getattr(module, "max_val", None)
        if isinstance(lo, torch.Tensor) and isinstance(hi, torch.Tensor) and lo.numel():
            check_finite_range(float(lo.min()), float(hi.max()), f"observer {name}")


def separate_repeated_module_calls(graph: torch.fx.GraphModule) -> None:
    """Give each call of a one-op module that is used several times its own source partition.

    The x86 quantizer groups nodes into partitions by the module they came from; one `nn.ReLU` called twice (as in
    torchvision's ResNet blocks) becomes a two-output partition, which it refuses ("Input partition has more than
    one output node"). Calls of such a module are independent, so each becomes its own partition.
    """
    by_module: dict[str, list[torch.fx.Node]] = defaultdict(list)
    for node in graph.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if node.op == "call_function" and stack:
            by_module[next(reversed(stack.values()))[0]].append(node)
    for path, nodes in by_module.items():
        if len(nodes) > 1 and len({node.target for node in nodes}) == 1:
            for node in nodes:
                stack = node.meta["nn_module_stack"]
                key, (_, module_type) = next(reversed(stack.items()))
                stack[key] = (f"{path}@{node.name}", module_type)


def drop_unreferenced_tensors(graph: torch.fx.GraphModule) -> None:
    """Delete parameters and buffers the graph no longer reads (and the reads of them nothing uses).

    `convert_pt2e` stores each quantized weight as a new int8 attribute but leaves the fp32 original registered
    on its submodule; exporting would then ship both and the int8 file would be larger than the fp32 one.
    """
    for node in graph.graph.find_nodes(op="get_attr"):
        if not node.users:  # an unlifted program reads every parameter, used or not (a pooler nothing reads)
            graph.graph.erase_node(node)
    referenced = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
    for name, _ in [*graph.named_parameters(), *graph.named_buffers()]:
        if name not in referenced:
            owner, _, attribute = name.rpartition(".")
            delattr(graph.get_submodule(owner) if owner else graph, attribute)
    graph.delete_all_unused_submodules()
    graph.recompile()


def quantized_layer_count(graph: torch.fx.GraphModule) -> int:
    """Number of conv/linear weights the graph holds in int8."""
    return sum(1 for node in graph.graph.nodes
               if node.op == "call_function" and any(op in str(node.target) for op in QUANTIZED_WEIGHT_OPS))
