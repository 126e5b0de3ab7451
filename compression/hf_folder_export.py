"""A stage's model written back as the Hugging Face folder it came from, in compressed-tensors format, so that
`from_pretrained(folder)` loads the compressed encoder or classifier (issue 10).

The program a folder job runs on was exported from the transformers model (`compression.hf_program`), and every
stage keeps each op's `nn_module_stack`, so the stage's graph says which module of the folder each weight belongs
to. What is read back from the graph:

- `aten.linear` whose weight is `dequantize_per_channel(int8 codes, scale, zero point)` (the default int8 PTQ):
  int8 per-channel weights; its input `dequantize_per_tensor(quantize_per_tensor(x))` becomes a static per-tensor
  int8 input quantizer (the program's uint8 codes shifted by 128: the same grid). compressed-tensors
  `int-quantized`, W8A8 static.
- embedding tables stored as codes and per-row (int8) or per-group (int4) scales (`compression.ptq.embeddings`):
  `int-quantized` Embedding weights, weight only.
- weights of the general PTQ path (`packed.safetensors`, weight-only): int 2-8 bits per channel or per group;
  8 bits `int-quantized`, fewer bits `pack-quantized`; its embedding tables (int8 per row, 4-bit per group)
  `int-quantized` Embedding weights, as above.
- QAT's activation quantizer modules (their eval-mode `grid()`): static per-tensor input quantizers; its integer
  weights come from its `packed.safetensors`, as the general path's do.
- `aten.linear` with a float weight and a float input (a layer PTQ's include/exclude left float): its weight is
  stored as float, and the module is named in the config's `ignore`.
- any other float parameter of the graph under its folder name: stored as it is (pruning changes them); a
  mixture of experts' per-expert float layers stacked back into its experts tensors (`compression.moe_folder`).
- a quantize/dequantize pair on an activation that feeds no linear layer (the gate product of a GLU or
  tanh-GELU MLP: Llama, Qwen2, ModernBERT, GPT-2, ALBERT) has no place in compressed-tensors, which quantizes the
  inputs of `nn.Linear`s only: it is left out, and that activation runs in float in the folder. So is the input
  quantizer of a module the graph calls more than once with different grids (ALBERT's shared layer): the folder
  holds one per module. Both are listed in the details; the comparison below decides whether the folder still
  computes what the stage's model does, and refuses it with the reason if not.

Every tensor of the folder's model that the graph lacks (a branch dropped as dead, such as BERT's pooler under
`last_hidden_state`) is copied from the source folder. Whatever cannot be expressed so (a tensor whose shape
changed unevenly, as structured pruning may do, since a config has one width per kind of layer; a different
architecture, as a zoo or low-rank distillation student; codebooks; smoothing divisions SmoothQuant inserts)
raises `NotExpressible` with the reason. A 'layers' student is the upload's architecture with fewer layers: its
stage is written against the student's own folder (`compression.hf_layer_student`), the stages after it against
the trained student's written folder. Widths changed evenly (every layer's MLP kept the same channels) are
written with the config field that holds them changed (`fitted_config`). The written folder is then loaded with
transformers and run on the example inputs, and is kept only if it computes what the stage's model computes (see
MAX_RELATIVE_DIFFERENCE); graphs with fake quantizers (QAT, the general path's activations) are refused before.
A sentence-transformers source keeps its modules.json, module folders and settings unchanged, and when the
program outputs the sentence embedding the folder's `last_hidden_state` is pooled (and normalized) the same way
before that comparison.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx

from compression.archive.sentence_transformers import SentenceEmbedding
from compression.fidelity import relative_max_gap
from compression.half_precision import half_precision
from compression.hf_program import load_folder_model
from compression.llm import export
from compression.llm.quantize import QuantizedWeight, WeightFormat
from compression.moe_folder import StackedExpertsNotWritable, restack, split_source, stacked_projections
from compression.ptq.addmm_linear import LINEAR_WEIGHT_SUFFIX
from compression.sentence_pooling import copy_sentence_transformers_files
from compression.tied_copies import shared_groups

aten = torch.ops.aten
PROGRAM_PREFIX = "model."  # the program's module names are the folder model's, under `_TensorOutput.model`
# Largest difference allowed between the folder's output and the stage model's, relative to the output's scale:
# this, or a quarter of the stage model's own distance from the float model, whichever is larger. Both compute the
# same dequantized graph; with static input quantizers, values a rounding ulp from a grid tie land on different
# codes in transformers' kernels (measured on all-MiniLM-L6-v2 int8: 0.04 of the scale, against 0.89 between the
# .pt2 and fp32, both at sentence cosine 0.993 to fp32). Weights are compared exactly (`_wrong_weights`); what
# the structural checks of `read_graph` could still miss (a missing operation) differs by about the output's scale.
MAX_RELATIVE_DIFFERENCE = 1e-3
SHARE_OF_COMPRESSION_ERROR = 0.25
# A sentence embedding pools the tokens: the compression's own per-token error averages out there, while a tie
# rounded the other way early on moves every token of a sentence alike. Measured on all-MiniLM-L6-v2 int8 (mean
# pooling + normalize): the folder 0.036 of the scale from the stage model, the stage model 0.133 from fp32. So
# pooled outputs may differ by half the compression's error, provided the folder is itself no further from the
# float model than the stage model is (by MAX_FOLDER_ERROR_GROWTH): a missing operation fails both.
SHARE_OF_COMPRESSION_ERROR_POOLED = 0.5
MAX_FOLDER_ERROR_GROWTH = 1.25
MAX_CONFIG_FIELDS = 4  # config fields tried together when fitting pruned widths


class NotExpressible(ValueError):
    """The stage's model cannot be written as the source architecture in a format transformers loads."""


@dataclass
class FolderLayout:
    """What goes into the folder: float tensors by name, quantized modules by name, and where each came from."""

    floats: dict[str, torch.Tensor] = field(default_factory=dict)
    weights: dict[str, QuantizedWeight] = field(default_factory=dict)  # module name -> quantized weight
    # module name -> static input quantizer (scale, zero point, bits) on compressed-tensors' signed grid
    inputs: dict[str, tuple[float, int, int]] = field(default_factory=dict)
    from_source: list[str] = field(default_factory=list)
    embeddings: set[str] = field(default_factory=set)  # quantized modules that are embedding tables
    config_changes: dict[str, int] = field(default_factory=dict)  # config fields set to the graph's widths
    # activation quantizers (quantize nodes) the folder runs in float: on no linear layer's input, or on a shared
    # module's input with different grids per call
    float_activations: list[str] = field(default_factory=list)
    # linear modules the graph runs in float (include/exclude): the config's `ignore` names them
    float_layers: set[str] = field(default_factory=set)
    # quantized tables whose module has its own forward, written as their dequantized float values
    dequantized_tables: list[str] = field(default_factory=list)
    # names of a tied tensor the folder leaves out: transformers ties them to the one it holds when it loads
    tied_copies: set[str] = field(default_factory=set)

    def packed(self, name: str) -> bool:
        """Below 8 bits, Linear weights are int32-packed (`pack-quantized`); compressed-tensors' Embedding loader
        has only the unpacked layout (`int-quantized`: each code in an int8)."""
        return self.weights[name].format.bits < 8 and name not in self.embeddings


def _attr(gm: fx.GraphModule, node) -> torch.Tensor | None:
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    owner, _, leaf = node.target.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, leaf)


def _scalar(gm: fx.GraphModule, value) -> float:
    tensor = _attr(gm, value)
    if tensor is not None:
        if tensor.numel() != 1:
            raise NotExpressible("an activation quantizer with more than one scale")
        return float(tensor)
    return float(value)


def _module_name(node: fx.Node) -> str | None:
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    path = next(reversed(stack.values()))[0].split("@")[0]  # `separate_repeated_module_calls` appends @node
    return path.removeprefix(PROGRAM_PREFIX) if path.startswith(PROGRAM_PREFIX) else None


def _quantized_use(node: fx.Node) -> str:
    """A quantize/dequantize node named by the op that reads it and that op's module ("conv2d in
    vit.embeddings.patch_embeddings.projection"), or by its own name where it has no such reader."""
    reader = next((user for user in node.users if not _is(user, "quantize")), None)
    if reader is None or reader.op != "call_function":
        return node.name
    op = getattr(reader.target, "__name__", str(reader.target)).split(".")[0]
    module = _module_name(reader)
    return f"{op} in {module}" if module else op


def _holds_tensors(module: torch.nn.Module) -> bool:
    """Modules the graph calls that hold state (quantizers' scales); stateless ones (export's `_guards_fn`) only
    check shapes."""
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _is(node, name: str) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and name in str(node.target)


def _int8_linear(gm: fx.GraphModule, dequant: fx.Node) -> QuantizedWeight:
    codes_node, scale_node, zero_node, axis, qmin, qmax = dequant.args[:6]
    codes, scale, zero = _attr(gm, codes_node), _attr(gm, scale_node), _attr(gm, zero_node)
    if codes is None or scale is None or axis != 0 or (qmin, qmax) != (-128, 127) or codes.dim() != 2:
        raise NotExpressible(f"weight quantizer {dequant.name} is not int8 per output channel")
    if zero is not None and bool((zero != 0).any()):
        raise NotExpressible(f"weight quantizer {dequant.name} is asymmetric")
    return QuantizedWeight(codes.to(torch.int8), scale.float().reshape(-1, 1), None,
                           WeightFormat(bits=8, group_size=None, symmetric=True))


def _shift_to_signed(qmin: int, qmax: int, where: str) -> tuple[int, int]:
    """(bits, shift): compressed-tensors' codes are signed, [-2^(bits-1), 2^(bits-1)); a grid within that range
    (narrow symmetric -7..7 included) stays as it is (shift 0), one starting elsewhere (uint8's 0..255) is the
    same values with its codes and zero point moved down by `shift`."""
    bits = (qmax - qmin).bit_length()
    if not 2 <= bits <= 8:
        raise NotExpressible(f"{where} has the range {qmin}..{qmax}, not a 2-8 bit grid")
    low = -(1 << (bits - 1))
    return bits, 0 if low <= qmin and qmax <= -low - 1 else qmin - low


def _signed_grid(scale: float, zero: int, qmin: int, qmax: int, where: str) -> tuple[float, int, int]:
    """(scale, zero point, bits) of an input quantizer on compressed-tensors' signed grid."""
    bits, shift = _shift_to_signed(qmin, qmax, f"input quantizer {where}")
    return scale, zero - shift, bits


def _input_quantizer(gm: fx.GraphModule, node) -> tuple[float, int, int] | None:
    """(scale, zero point, bits) of a static per-tensor input quantizer (int8 PTQ's quantize/dequantize pair, or a
    QAT activation quantizer module with its eval-mode `grid`), None for a float input."""
    if isinstance(node, fx.Node) and node.op == "call_module":
        grid = gm.get_submodule(node.target).grid()
        if grid.scale.numel() != 1 or grid.zero_point.numel() != 1:
            raise NotExpressible(f"input quantizer {node.target} is not per tensor")
        return _signed_grid(float(grid.scale), round(float(grid.zero_point)), grid.qmin, grid.qmax, node.target)
    if not _is(node, "dequantize_per_tensor"):
        return None
    _, scale, zero, qmin, qmax = node.args[:5]
    return _signed_grid(_scalar(gm, scale), round(_scalar(gm, zero)), qmin, qmax, node.name)


def _input_quantizer_modules(gm: fx.GraphModule) -> set[fx.Node]:
    """Modules the graph calls that are activation quantizers feeding only linear layers; any other module holding
    tensors is something the folder's architecture does not have."""
    found = set()
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if not _holds_tensors(module):
            continue  # export's `_guards_fn`: shape checks only
        if not callable(getattr(module, "grid", None)) or not all(
                user.op == "call_function" and user.target == aten.linear.default and user.args[0] is node
                for user in node.users):
            raise NotExpressible(f"the graph calls module '{node.target}' ({type(module).__name__}), which the "
                                 "folder's layers cannot hold")
        found.add(node)
    return found


def _same_weight(a: QuantizedWeight, b: QuantizedWeight) -> bool:
    return a.codes.shape == b.codes.shape and torch.equal(a.codes, b.codes) and torch.equal(a.scale, b.scale)


def _activation_pair(node: fx.Node) -> tuple[fx.Node, ...]:
    """(quantize, dequantize...) of a static per-tensor activation quantizer `node` is the quantize of, else ()."""
    if not _is(node, "quantize_per_tensor") or _is(node, "dequantize"):
        return ()
    dequantizers = tuple(node.users)
    if not dequantizers or not all(_is(user, "dequantize_per_tensor") for user in dequantizers):
        return ()
    return (node, *dequantizers)


def _run_in_float(layout: FolderLayout, nodes) -> None:
    """Quantize/dequantize nodes of an activation the folder cannot hold: it runs in float there."""
    names = {node.name for node in nodes if _is(node, "quantize") and not _is(node, "dequantize")}
    layout.float_activations = sorted(names.union(layout.float_activations))


def _embedding(codes: torch.Tensor, scale: torch.Tensor) -> QuantizedWeight:
    """The table of `compression.ptq.embeddings` as signed codes and scales [rows, groups]."""
    if codes.dtype == torch.int8:
        return QuantizedWeight(codes, scale.float().reshape(len(codes), 1), None,
                               WeightFormat(bits=8, group_size=None, symmetric=True))
    signed = torch.stack([codes & 15, codes >> 4], -1).flatten(-2).to(torch.int8) - 8
    group_size = signed.shape[1] // scale.shape[1]
    return QuantizedWeight(signed, scale.float(), None, WeightFormat(bits=4, group_size=group_size, symmetric=True))


def read_graph(gm: torch.nn.Module, source: dict[str, torch.Tensor], source_rounds: int = 0,
               computed: frozenset[str] = frozenset(), tables: frozenset[str] = frozenset(),
               tied: list[list[str]] | None = None) -> FolderLayout:
    """The folder's tensors as the stage's graph holds them; `source` is the folder model's state dict,
    `source_rounds` how many `aten.round` the uploaded program itself computes, `tables` the names of its
    `nn.Embedding` modules, `tied` its groups of shared tensors (`shared_groups`)."""
    tied = tied or []
    if not isinstance(gm, fx.GraphModule):
        raise NotExpressible(f"the stage's model is a {type(gm).__name__}, not a graph of the uploaded folder")
    layout = FolderLayout()
    consumed: set[str] = set()
    expressed: set[fx.Node] = set()  # quantize/dequantize nodes the folder holds as a layer's quantizer
    input_quantizers: dict[str, set[fx.Node]] = {}  # module name -> the quantize/dequantize nodes of its input
    shared_inputs: set[str] = set()  # modules called on different input grids: their inputs run in float
    _input_quantizer_modules(gm)
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == aten.linear.default:
            weight, quantizer = node.args[1], _input_quantizer(gm, node.args[0])
            name = _module_name(node)
            if not _is(weight, "dequantize_per_channel") and quantizer is None:
                if name is not None and f"{name}.weight" in source:
                    layout.float_layers.add(name)
                continue  # a float layer: its weight is read below with the other parameters
            if name is None or f"{name}.weight" not in source:
                raise NotExpressible(f"quantized linear {node.name} does not belong to a module of the folder")
            if _is(weight, "dequantize_per_channel"):
                quantized = _int8_linear(gm, weight)
                if name in layout.weights and not _same_weight(layout.weights[name], quantized):
                    raise NotExpressible(f"module '{name}' is called with different quantized weights")
                layout.weights[name] = quantized
                consumed.update(arg.target for arg in weight.args[:3]
                                if isinstance(arg, fx.Node) and arg.op == "get_attr")
                expressed.add(weight)
            if quantizer is not None:
                input_nodes = {node.args[0], node.args[0].args[0]} if node.args[0].op == "call_function" else set()
                expressed.update(input_nodes)
                if name in shared_inputs:
                    _run_in_float(layout, input_nodes)
                elif name in layout.inputs and layout.inputs[name] != quantizer:
                    # a module called again on another grid (ALBERT's one layer run at every depth): the folder
                    # holds one input quantizer per module, so this module's input runs in float at every call
                    shared_inputs.add(name)
                    del layout.inputs[name]
                    _run_in_float(layout, input_nodes | input_quantizers.pop(name))
                else:
                    layout.inputs[name] = quantizer
                    input_quantizers.setdefault(name, set()).update(input_nodes)
        elif node.op == "get_attr" and node.target.endswith(".weight_codes"):
            name = node.target.removeprefix(PROGRAM_PREFIX).removesuffix(".weight_codes")
            # A re-exported program names a table tied to the output layer after that layer (`lm_head`): the
            # table is the embedding module's it is tied to.
            name = _tied_module(name, tied, tables, table=True)
            if f"{name}.weight" not in source:
                raise NotExpressible(f"embedding table {node.target} does not belong to a module of the folder")
            layout.embeddings.add(name)
            layout.weights[name] = _embedding(_attr(gm, node), _attr(gm, gm.graph.find_nodes(
                op="get_attr", target=node.target.removesuffix("_codes") + "_scale")[0]))
            consumed.update({node.target, node.target.removesuffix("_codes") + "_scale"})
    unexpressed = [node for node in gm.graph.nodes if node not in expressed and _is(node, "quantize")]
    pairs = {member for node in unexpressed for member in _activation_pair(node)}
    _run_in_float(layout, pairs)
    unexpressed = [node for node in unexpressed if node not in pairs]
    if unexpressed:  # e.g. a weight quantizer of an op that is no linear layer (GPT-2's Conv1D addmm, a conv)
        # A few such layers (a ViT's patch-embedding convolution) can stay float; a CNN's many cannot usefully.
        modules = sorted({PROGRAM_PREFIX + module for node in unexpressed for user in node.users
                          if (module := _module_name(user))})
        keep_float = (f"; a ptq stage with \"exclude\": {modules} keeps them float and gets a folder"
                      if 0 < len(modules) <= 4 else "")
        raise NotExpressible(f"quantization at {[_quantized_use(node) for node in unexpressed[:3]]} is no weight or "
                             "input quantizer of a linear layer of the folder's model (compressed-tensors quantizes "
                             f"nn.Linear layers only; the stage's .pt2 holds the whole quantized model){keep_float}")
    rounding = [node.name for node in gm.graph.nodes if node.op == "call_function"
                and node.target == aten.round.default]
    if len(rounding) > source_rounds:
        # fake quantization traced into plain ops (the general PTQ path's activations): the folder would hold
        # the weights but run the activations in float
        raise NotExpressible(f"the graph rounds values at {rounding[:3]} (fake-quantized activations), which the "
                             "folder's layers cannot hold; weight-only quantization (activations: null) can be "
                             "written")
    for attr, tensor in [*gm.named_parameters(), *gm.named_buffers()]:
        if attr in consumed:
            continue
        name = attr.removeprefix(PROGRAM_PREFIX)
        if name in computed:  # a buffer the architecture computes (rotary inv_freq), in no checkpoint
            continue
        if not attr.startswith(PROGRAM_PREFIX) or name not in source:
            if tensor.is_floating_point() and tensor.numel() > 1:
                raise NotExpressible(f"the graph holds a tensor '{attr}' that is no tensor of the folder's model "
                                     "(a different architecture or inserted operations)")
            continue
        layout.floats[name] = tensor.detach()  # shapes are checked against the config by `fitted_config`
    return layout


def _tied_module(name: str, tied: list[list[str]], tables: frozenset[str], table: bool) -> str:
    """The module that uses module `name`'s weight as an embedding table (`table`) or as a layer's weight: `name`
    itself, or the one module of the other kind that shares its weight in the source (a tied output layer and
    input embedding, which a program reads under one name). `tied`: the source's groups of shared tensors
    (`shared_groups`); `tables`: its `nn.Embedding` modules."""
    if (name in tables) == table:
        return name
    partners = [other.rsplit(".", 1)[0] for names in tied if f"{name}.weight" in names for other in names
                if other.endswith(".weight") and (other.rsplit(".", 1)[0] in tables) == table]
    return partners[0] if len(partners) == 1 else name


def _refuse_transposed_layers(source_model: torch.nn.Module, model: torch.nn.Module,
                              layout: FolderLayout | None = None) -> None:
    """GPT-2's `Conv1D` layers (weight stored [in, out]) run as linears after `compression.ptq.addmm_linear`
    (int8 PTQ and the weight-only path); compressed-tensors quantizes `nn.Linear` modules only, so a folder cannot
    hold them. Found by the rewritten weights' names in the graph, or (int8) among the layout's quantized layers."""
    modules = dict(source_model.named_modules())
    rewritten = {name.removeprefix(PROGRAM_PREFIX).removesuffix(f".weight_{LINEAR_WEIGHT_SUFFIX}")
                 for name, _ in model.named_parameters() if name.endswith(f".weight_{LINEAR_WEIGHT_SUFFIX}")}
    transposed = sorted(name for name in rewritten | set(layout.weights if layout else ())
                        if name in modules and type(modules[name]).__name__ == "Conv1D")
    if transposed:
        raise NotExpressible(f"{len(transposed)} layers of this model are transformers Conv1D modules (e.g. "
                             f"'{transposed[0]}'), quantized as linears; a compressed-tensors folder holds "
                             "quantized nn.Linear modules only: the stage's other artifacts hold the quantized "
                             "model")


def _modules_with_own_forward(source_model: torch.nn.Module, layout: FolderLayout) -> None:
    """compressed-tensors replaces a quantized module's forward with its own (`linear` / `embedding` of the
    decompressed weight, its input quantizer first), which breaks a module class computing something else in its
    forward (OPT's learned positions and RoFormer's sinusoidal ones take a mask or a shape; I-BERT's QuantLinear).
    Such an embedding table is written as float: its dequantized values, so the folder computes what the stage's
    model computes (`dequantized_tables`); such a linear layer cannot be written."""
    modules = dict(source_model.named_modules())
    own = sorted(name for name in {*layout.weights, *layout.inputs}
                 if name in modules and type(modules[name]).forward not in (torch.nn.Linear.forward,
                                                                            torch.nn.Embedding.forward))
    for name in [name for name in own if name in layout.embeddings and name not in layout.inputs]:
        table = layout.weights.pop(name)
        layout.embeddings.discard(name)
        layout.floats[f"{name}.weight"] = table.dequantize()
        layout.dequantized_tables.append(name)
        own.remove(name)
    if own:
        raise NotExpressible(f"the quantized layer '{own[0]}' is a {type(modules[own[0]]).__name__}, which "
                             "computes its own forward; a compressed-tensors folder would replace it with a plain "
                             "linear layer")


def _layout_shapes(layout: FolderLayout) -> dict[str, torch.Size]:
    shapes = {name: tensor.shape for name, tensor in layout.floats.items()}
    shapes |= {f"{name}.weight": quantized.codes.shape for name, quantized in layout.weights.items()}
    return shapes


def fitted_config(source_model: torch.nn.Module, layout: FolderLayout) -> dict:
    """The source's config, with the integer fields structured pruning changed (e.g. `intermediate_size` when every
    layer's MLP kept the same number of channels) set so that the architecture's tensors have the graph's shapes.

    Each dimension that changed gives old -> new; the config fields holding an old value take the new one, and the
    architecture built from that config (on the meta device) must then have every tensor's shape. Layers shrunk
    by different amounts, or sizes no config field holds (attention heads pruned in some layers only: transformers
    5 has no `pruned_heads`), raise NotExpressible."""
    config = source_model.config.to_dict()
    source = source_model.state_dict()
    shapes = _layout_shapes(layout)
    changed = {name: shape for name, shape in shapes.items() if shape != source[name].shape}
    if not changed:
        return config
    changes: dict[int, set[int]] = {}
    for name, shape in changed.items():
        if len(shape) != source[name].dim():
            raise NotExpressible(f"'{name}' has {len(shape)} dimensions, the folder's model {source[name].dim()}")
        for old, new in zip(source[name].shape, shape):
            if old != new:
                changes.setdefault(old, set()).add(new)
    uneven = {old: sorted(new) for old, new in changes.items() if len(new) > 1}
    candidates = [key for key, value in config.items() if type(value) is int and value in changes and not uneven]
    example = next(iter(changed))
    why = (f"a Hugging Face config has one width per kind of layer, and no change of its fields {candidates} gives "
           f"every tensor the pruned graph's shape (e.g. '{example}': {list(changed[example])}, was "
           f"{list(source[example].shape)}): layers shrunk by different amounts cannot be described (the .pt2 "
           "holds the pruned model)")
    expected = {**shapes, **{name: source[name].shape for name in layout.from_source}}
    unexplained = set(changed)  # by the config that explains the most shapes
    # The fewest fields that explain every shape: a field that merely holds the same number (BERT-tiny's 64
    # positions beside 64 MLP channels) stays as it is.
    for count in range(1, min(len(candidates), MAX_CONFIG_FIELDS) + 1):
        for keys in itertools.combinations(candidates, count):
            fields = {key: next(iter(changes[config[key]])) for key in keys}
            with torch.device("meta"):
                rebuilt = type(source_model)(type(source_model.config).from_dict(config | fields)).state_dict()
            wrong = {name for name, shape in expected.items() if name not in rebuilt or rebuilt[name].shape != shape}
            if not wrong:
                layout.config_changes = fields
                return config | fields
            unexplained = min(unexplained, wrong, key=len)
    raise NotExpressible(f"{why}. To prune only what a config can describe, exclude the layers it cannot: "
                         f"\"exclude\": {json.dumps(exclude_patterns(unexplained))}")


def exclude_patterns(tensor_names: set[str]) -> list[str]:
    """`PruneSpec.exclude` patterns (matched against the stage program's parameter names) that keep whole the
    modules of `tensor_names`, one pattern per kind of layer: layer indices become '*'."""
    modules = {re.sub(r"\.\d+\.", ".*.", name.rsplit(".", 1)[0]) for name in tensor_names}
    return sorted(f"*{module}.*" for module in modules)


def _merge_source(layout: FolderLayout, source: dict[str, torch.Tensor]) -> None:
    for name, tensor in source.items():
        module = name.rsplit(".", 1)[0]
        quantized = name.endswith(".weight") and module in layout.weights
        if name not in layout.floats and name not in layout.tied_copies and not quantized:
            layout.floats[name] = tensor
            layout.from_source.append(name)


def _weights_read(gm: fx.GraphModule) -> dict[str, torch.Tensor]:
    """Each module's float weight as the graph's ops read it (module name -> tensor), whatever the attribute's
    name: a re-exported program keeps one name for tensors that were tied."""
    reads = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and (module := _module_name(node)) is not None:
            for arg in node.args:
                if isinstance(arg, fx.Node) and arg.op == "get_attr" and arg.target.endswith(".weight"):
                    reads.setdefault(module, _attr(gm, arg))
    return reads


def _fill_tied(gm: fx.GraphModule, tied: list[list[str]], layout: FolderLayout) -> bool:
    """Tensors the source model shares (a causal LM's output layer and input embedding): the stage's program reads them
    under one name (`compression.tied_copies`), so each module's float weight is the one its op reads, and a name the
    graph lacks gets the values the stage computes with (a quantized weight's dequantized values), not the upload's.
    Returns whether the folder must untie them: one of them is stored quantized, or with other values (iPQ of the
    output layer only), which transformers' tying would replace."""
    reads = _weights_read(gm)
    untie = False
    for names in tied:
        modules = [name.rsplit(".", 1)[0] for name in names]
        for name, module in zip(names, modules):
            if module not in layout.weights and reads.get(module) is not None:
                layout.floats[name] = reads[module].detach()
        quantized = [module for module in modules if module in layout.weights]
        values = next((layout.floats[name] for name in names if name in layout.floats), None)
        if values is None and quantized:
            values = layout.weights[quantized[0]].dequantize()
        if values is None:
            continue  # the graph holds none of them: the source's (copied by `_merge_source`) is what it computes
        for name, module in zip(names, modules):
            if name not in layout.floats and module not in layout.weights:
                layout.floats[name] = values
        floats = [layout.floats[name] for name in names if name in layout.floats]
        apart = bool(quantized) or any(not torch.equal(floats[0], other) for other in floats[1:])
        if not apart:  # still tied: one copy, as save_pretrained writes (safetensors refuses shared memory)
            layout.tied_copies.update(names[1:])
            for name in names[1:]:
                layout.floats.pop(name, None)
        untie = untie or apart
    return untie


def _schemes(layout: FolderLayout) -> list[dict]:
    """One compressed-tensors scheme per distinct (weights, inputs, storage), targeting its modules by name."""
    groups: dict[str, dict] = {}
    for name in [*layout.weights, *(name for name in layout.inputs if name not in layout.weights)]:
        quantized = layout.weights.get(name)
        if quantized is None:  # a layer whose input is quantized but whose weight stays float
            scheme = {"format": "dense"}
        else:
            scheme = {"format": "pack-quantized" if layout.packed(name) else "int-quantized",
                      "weights": export.weight_args(quantized.format, act_order=False)}
        if name in layout.inputs:
            scheme["input_activations"] = {"num_bits": layout.inputs[name][2], "type": "int", "symmetric": False,
                                           "strategy": "tensor", "dynamic": False}
        key = repr(sorted(scheme.items()))
        groups.setdefault(key, {**scheme, "targets": []})["targets"].append(name)
    return list(groups.values())


def _tensors(layout: FolderLayout) -> dict[str, torch.Tensor]:
    tensors = {name: tensor.contiguous() for name, tensor in layout.floats.items()}
    for name, quantized in layout.weights.items():
        tensors.update(export.compressed_tensors(name, quantized, packed=layout.packed(name)))
    for name, (scale, zero, _) in layout.inputs.items():
        tensors[f"{name}.input_scale"] = torch.tensor([scale], dtype=torch.float32)
        tensors[f"{name}.input_zero_point"] = torch.tensor([zero], dtype=torch.int8)
    return _unshared(tensors)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each tensor in memory of its own: an int8 program reads a tied table's codes for both the embedding and the
    output layer (`compression.ptq.embeddings`), and safetensors refuses tensors that share memory; the folder
    holds each module's copy, as compressed-tensors has no way to share one."""
    seen: set[int] = set()
    for name, tensor in tensors.items():
        if tensor.untyped_storage().data_ptr() in seen:
            tensors[name] = tensor.clone()
        seen.add(tensors[name].untyped_storage().data_ptr())
    return tensors


def load_written_folder(folder: Path, task: str, embedding: SentenceEmbedding | None = None) -> torch.nn.Module:
    """The folder as transformers loads it (with compressed-tensors installed: weights decompressed at the first
    call, each static input quantizer applied), wrapped like the upload (token inputs, the task's one output,
    pooled like the program when it outputs a sentence embedding)."""
    return load_folder_model(folder, task, embedding)


def _wrong_weights(loaded: torch.nn.Module, model: torch.nn.Module, layout: FolderLayout) -> list[str]:
    """Quantized modules whose weight, as transformers decompressed it, is not the stage model's: exact, unlike
    the outputs, which static input quantizers may round differently at ties. The stage's weight is its float
    parameter where it keeps one (QAT, the general path), else the codes read from its graph dequantized."""
    parameters = dict(model.named_parameters())
    wrong = []
    for name, quantized in layout.weights.items():
        stored = parameters.get(f"{PROGRAM_PREFIX}{name}.weight")
        expected = stored.detach().float() if stored is not None else quantized.dequantize()
        got = loaded.get_submodule(name).weight.detach().float()
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-5, atol=1e-7):
            wrong.append(name)
    return wrong


def write_stage_folder(model: torch.nn.Module, source_folder: Path, task: str, output_dir: Path,
                       example_inputs: tuple[torch.Tensor, ...], packed_path: Path | None = None,
                       source_rounds: int = 0, embedding: SentenceEmbedding | None = None) -> dict:
    """Write the stage's `model` as a folder of the source's architecture to `output_dir`; returns what was
    written (format, quantized modules, copied tensors, the check against the stage's model). `packed_path`: the
    stage's `packed.safetensors` (general PTQ path), whose integer weights the model holds dequantized. Raises
    NotExpressible when the model cannot be written so or the written folder computes something else.
    `embedding`: the sentence embedding the stage's program outputs; the folder's transformer output is pooled
    the same way before the comparison. A sentence-transformers source's own files are copied unchanged."""
    # A quantizing stage of a half-precision upload ran in float32 (`compression.half_precision`): its folder's
    # float tensors and compute dtype are float32 too, so transformers runs what the stage measured.
    float_model = load_folder_model(source_folder, task, embedding,
                                    dtype="auto" if half_precision(model) else torch.float32)
    source_model = float_model.model
    source = source_model.state_dict()
    computed = frozenset(name for name, _ in source_model.named_buffers()) - set(source)
    _refuse_transposed_layers(source_model, model)  # before read_graph, which would call them foreign tensors
    tables = frozenset(name for name, module in source_model.named_modules() if isinstance(module, torch.nn.Embedding))
    tied = shared_groups(source.items())
    # A mixture of experts' program runs each expert as linear layers: read against the source split so too, and
    # stacked back into the folder's tensors (`compression.moe_folder`).
    experts = stacked_projections(source_model)
    program_source = split_source(source, experts) if experts else source
    layout = read_graph(model, program_source, source_rounds, computed, tables, tied)
    _refuse_transposed_layers(source_model, model, layout)
    if packed_path is not None:
        add_packed_weights(layout, packed_path, program_source, tables, tied)
    try:
        restack(layout.floats, set(layout.weights) | set(layout.inputs), experts)
    except StackedExpertsNotWritable as exc:
        raise NotExpressible(f"this model is a mixture of experts: {exc}") from exc
    _modules_with_own_forward(source_model, layout)
    untied = _fill_tied(model, tied, layout)
    _merge_source(layout, source)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    writer = export.ShardWriter(output_dir, 1)
    writer.write(_tensors(layout))
    writer.finish()
    config = fitted_config(source_model, layout)
    config.pop("quantization_config", None)
    if config.get("tie_word_embeddings") and untied:
        # A causal LM's output layer shares the input embedding's table (GPT-2, Llama 3.2, Qwen2.5, Gemma): once a
        # stage quantized or changed one of them, transformers must not tie them again when it loads the folder
        # (it would replace the quantized output layer with the table).
        config["tie_word_embeddings"] = False
    # The class whose weights the folder holds: an encoder-decoder checkpoint's features are written as its
    # encoder-only class (T5EncoderModel), which the saved name (T5ForConditionalGeneration) would not load.
    config["architectures"] = [type(source_model).__name__]
    schemes = _schemes(layout)
    if schemes:
        # the schemes target quantized modules by name, so a float layer is left alone either way; `ignore` says so
        ignore = sorted(layout.float_layers - set(layout.weights) - set(layout.inputs))
        config["quantization_config"] = export.config_from_schemes(schemes, ignore=ignore)
    export.write_config(output_dir, config, source_folder)
    sentence_transformers_files = copy_sentence_transformers_files(source_folder, output_dir)

    with torch.no_grad():
        expected = model(*example_inputs)
        try:
            loaded = load_written_folder(output_dir, task, embedding)
        except (AttributeError, KeyError, RuntimeError, ValueError) as exc:
            # e.g. T5's weight initialisation, which reads `.weight` of linears compressed-tensors has packed
            shutil.rmtree(output_dir)
            raise NotExpressible(f"transformers cannot load the written compressed-tensors folder back "
                                 f"({type(exc).__name__}: {str(exc)[:200]}); the stage's .pt2 is its model") from exc
        got = loaded(*example_inputs)  # the first call decompresses the weights
        reference = float_model(*example_inputs)
        difference, compression_error = relative_max_gap(got, expected), relative_max_gap(expected, reference)
        folder_error = relative_max_gap(got, reference)
    share = SHARE_OF_COMPRESSION_ERROR
    if embedding is not None and folder_error <= MAX_FOLDER_ERROR_GROWTH * compression_error:
        share = SHARE_OF_COMPRESSION_ERROR_POOLED
    allowed = max(MAX_RELATIVE_DIFFERENCE, share * compression_error)
    wrong = _wrong_weights(loaded.model, model, layout)
    if wrong or not difference <= allowed:
        shutil.rmtree(output_dir)
        in_float = (f"; {len(layout.float_activations)} activation quantizers compressed-tensors cannot hold "
                    f"(e.g. {layout.float_activations[:2]}) run in float there"
                    if layout.float_activations else "")
        raise NotExpressible(f"the folder's weight '{wrong[0]}' differs from the stage model's" if wrong else
                             f"the folder's output differs from the stage's model by {difference:.3g} of its scale "
                             f"(allowed {allowed:.3g}): the graph computes something the architecture does not"
                             f"{in_float}")
    return {"format": config.get("quantization_config", {}).get("format", "dense (float)"),
            "quantized_modules": len(layout.weights), "static_input_quantizers": len(layout.inputs),
            "float_activations": layout.float_activations, "dequantized_tables": layout.dequantized_tables,
            "copied_from_source": layout.from_source, "config_changes": layout.config_changes,
            "sentence_transformers_files": sentence_transformers_files,
            "compared_output": "sentence_embedding" if embedding is not None else float_model.output,
            "relative_difference_to_stage_model": difference,
            "stage_model_relative_difference_to_float": compression_error,
            "folder_relative_difference_to_float": folder_error,
            "size_bytes": export.folder_bytes(output_dir)}


def _per_row(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """A per-tensor, per-channel or per-group parameter as [rows, groups]."""
    return tensor.reshape(1, 1).expand(rows, 1) if tensor.numel() == 1 else tensor.reshape(rows, -1)


def add_packed_weights(layout: FolderLayout, packed_path: Path, source: dict[str, torch.Tensor],
                       tables: frozenset[str] = frozenset(), tied: list[list[str]] | None = None) -> None:
    """The general PTQ path's integer weights (`packed.safetensors`) into `layout`, replacing their dequantized
    float copies: per tensor, per channel or per group of input columns, 2-8 bits, symmetric or not; embedding
    tables per row or per group of a row. `tables`: the source's `nn.Embedding` modules, `tied` its groups of
    shared tensors (a tied table's layer weight is its output layer's)."""
    from compression.quant.packed import FORMAT, open_with_graph, unpack_codes

    _, tensors, manifest = open_with_graph(packed_path, FORMAT)
    for entry in manifest:
        attr = entry["attr"]
        name = _tied_module(attr.removeprefix(PROGRAM_PREFIX).removesuffix(".weight"), tied or [], tables,
                            table=bool(entry.get("embedding")))
        if entry["dtype"] != "int" or len(entry["shape"]) != 2 or f"{name}.weight" not in source:
            raise NotExpressible(f"'{attr}' is stored as {entry['dtype']} {entry['shape']}, which compressed-tensors "
                                 "has no layout for here (integer Linear weights and embedding tables only)")
        rows, columns = entry["shape"]
        qmin, group = entry["qmin"], entry.get("group_size")
        if group is not None and columns % group:
            raise NotExpressible(f"'{attr}': {columns} input columns are not a multiple of the group size {group}")
        bits, shift = _shift_to_signed(qmin, entry["qmax"], f"'{attr}'")
        codes = unpack_codes(tensors[f"{attr}.codes"], entry["bits"], qmin, (rows, columns)) - shift
        scale = _per_row(tensors[f"{attr}.scale"].float(), rows).contiguous()
        stored = tensors.get(f"{attr}.zero_point")  # kept as zero point - qmin by the packed format
        zero = None if stored is None else _per_row(stored.to(torch.int32), rows) + qmin
        if zero is None and shift:  # a symmetric grid moved down: its zero is no longer at code 0
            zero = torch.zeros(scale.shape, dtype=torch.int32)
        if zero is not None:
            zero = (zero.expand_as(scale) - shift).to(torch.int8).contiguous()
        layout.weights[name] = QuantizedWeight(codes.to(torch.int8), scale, zero,
                                               WeightFormat(bits=bits, group_size=group, symmetric=zero is None))
        if entry.get("embedding"):
            layout.embeddings.add(name)  # stored unpacked: compressed-tensors' Embedding loader reads no other
        layout.floats.pop(f"{name}.weight", None)


def rounding_ops(program: torch.export.ExportedProgram) -> int:
    return sum(1 for node in program.graph.nodes if node.op == "call_function" and node.target == aten.round.default)


def stage_folder_artifacts(result, source_folder: Path | list[Path], task: str,
                           example_inputs: tuple[torch.Tensor, ...], workdir: Path, ctx, source_rounds: int = 0,
                           embedding: SentenceEmbedding | None = None, hands_on: frozenset[int] = frozenset()) -> None:
    """Add to each stage of a folder job's `result` (a `PipelineResult`) its model as a zipped Hugging Face folder
    (`model.hf.zip`, kind `model.hf_folder`), and under the stage's metrics `hf_folder` what was written or why
    nothing could be. The folder is an extra download: a stage whose model it cannot express keeps its `.pt2`.
    `source_folder`: the upload's folder, or one per stage (a 'layers' student's folder from its stage on).
    `hands_on`: stages (a 'layers' student's training) whose written folder becomes the source of the stages after
    them that had its source: a later `ptq` is then checked against the trained float student, not the untrained
    one, so its tolerance is its own compression error."""
    from compression import formats
    from compression.context import Cancelled
    from compression.formats import hf_folder

    workdir.mkdir(parents=True, exist_ok=True)
    sources = list(source_folder) if isinstance(source_folder, list) else [source_folder] * len(result.stages)
    for index, stage in enumerate(result.stages):
        stage_ctx = ctx.for_stage(f"{index}:{stage.method}")
        stage_ctx.progress("hf_folder", 0, 1)
        packed = next((a.path for a in stage.artifacts if a.kind == "packed.safetensors"), None)
        folder = workdir / f"{index}_{stage.method}_hf"
        try:
            details = write_stage_folder(stage.model, sources[index], task, folder, example_inputs, packed,
                                         source_rounds, embedding)
        except Cancelled:
            raise
        except Exception as exc:  # the .pt2 is the stage's result; a folder it cannot be written as is not a failure
            reason = str(exc) if isinstance(exc, NotExpressible) else f"{type(exc).__name__}: {exc}"
            stage.metrics["hf_folder"] = {"written": False, "reason": reason[:1000]}
            stage_ctx.progress("hf_folder", 1, 1)
            continue
        if index in hands_on:
            sources[index + 1:] = [folder if source == sources[index] else source for source in sources[index + 1:]]
        archive = hf_folder.write(folder, workdir / f"{index}_{stage.method}_{hf_folder.ARTIFACT_NAME}")
        stage.artifacts.append(formats.artifact(hf_folder.KIND, hf_folder.ARTIFACT_NAME, archive, task=task,
                                                quantization=details["format"]))
        stage.metrics["hf_folder"] = {"written": True, **details, "size_bytes": archive.stat().st_size}
        stage_ctx.progress("hf_folder", 1, 1)
