"""What a stage's graph holds, read as the tensors of the Hugging Face folder it came from
(`compression.hf_folder_export` writes them). The program a folder job runs on was exported from the transformers
model (`compression.hf_program`), and every stage keeps each op's `nn_module_stack`, so the graph says which module
of the folder each weight belongs to.

What is read back from the graph:

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
  holds one per module. Both are listed in the details; the comparison `compression.hf_folder_export` makes
  decides whether the folder still computes what the stage's model does, and refuses it with the reason if not.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

import torch
from torch import fx

from compression.llm.quantize import QuantizedWeight, WeightFormat
from compression.ptq.graph_rewrites import stored_tensor
from compression.quant.graph import CONVOLUTION_CALLS

aten = torch.ops.aten
PROGRAM_PREFIX = "model."  # the program's module names are the folder model's, under `_TensorOutput.model`
# Of the quantized weights, the share a folder may hold as float convolutions (compressed-tensors has no
# convolution layout: a ViT's patch embedding, a speech model's feature encoder) and as float layers whose rows no
# group divides (`hf_folder_export._keep_float`); a CNN would be a float folder.
MAX_DEQUANTIZED_SHARE = 0.5
QUANTIZED_INPUT_READERS = CONVOLUTION_CALLS | {aten.linear.default}
AFFINE_BATCH_NORM = re.compile(r"[^.]+_affine_(scale|shift)")  # `compression.ptq.batch_norm_affine`'s buffers


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
    # dequantize nodes by which another op (PatchTSMixer's gating multiplication) reads an activation whose
    # quantizer the folder holds as a linear layer's input quantizer: in the folder that op reads the float one
    float_reads: list[str] = field(default_factory=list)
    # linear modules the graph runs in float (include/exclude): the config's `ignore` names them
    float_layers: set[str] = field(default_factory=set)
    # quantized tables written as their dequantized float values: their module has its own forward, or a decoder the
    # folder keeps float reads them too (`compression.hf_whole_model_folder`)
    dequantized_tables: list[str] = field(default_factory=list)
    # mixture-of-experts routers the stage quantized, written as their dequantized float weights (own forward)
    dequantized_routers: list[str] = field(default_factory=list)
    # quantized convolutions (the general path's: ConvBERT's depthwise convs; int8 PTQ's: a ViT's patch embedding),
    # written as their dequantized float weights: compressed-tensors holds Linear and Embedding weights only
    dequantized_convs: list[str] = field(default_factory=list)
    # layers of the general path whose rows no group size of 8 or more divides without cutting one of the stage's
    # groups across two (`hf_folder_export._dividing_width`), written as their dequantized float weights
    dequantized_uneven_groups: list[str] = field(default_factory=list)
    # quantized modules whose codes the graph computes from their float weight (`_weight_codes`): that float
    # parameter is no stage weight to compare the folder's with, the codes are
    quantized_in_graph: set[str] = field(default_factory=set)
    # batch norms the stage folded into the convolution before them, written as identities (plus the folded bias),
    # and the folded shift a bias-free convolution held as `weight_bias`, by norm
    folded_norms: list[str] = field(default_factory=list)
    folded_shifts: dict[str, torch.Tensor] = field(default_factory=dict)
    # tensors of int8 PTQ's batch norms rewritten as affine maps, whose norms the folder keeps as the checkpoint's
    affine_norms: int = 0
    # layers (the program's names) whose static input quantizer the folder cannot hold: they read float inputs
    # there (experts and routers), which the comparison with the stage's model takes into account
    float_inputs: set[str] = field(default_factory=set)
    # names of a tied tensor the folder leaves out: transformers ties them to the one it holds when it loads
    tied_copies: set[str] = field(default_factory=set)
    # quantized experts held as the checkpoint's per-expert layers (`compression.moe_folder.checkpoint_experts`),
    # and the shapes of the stacked tensors of the folder's model they stand for
    expert_layers: set[str] = field(default_factory=set)
    stacked_experts: dict[str, torch.Size] = field(default_factory=dict)
    # layers below 8 bits stored one code per int8 (`int-quantized`), as their `weight`, which the architecture's
    # weight initialisation reads (a packed layer has none: `hf_folder_export._unpack_init_reads`)
    unpacked: set[str] = field(default_factory=set)

    def write_float(self, name: str, dtype: torch.dtype = torch.float32) -> None:
        """Write the quantized module `name` as its dequantized float weight instead."""
        self.floats[f"{name}.weight"] = self.weights.pop(name).dequantize(dtype)

    def packed(self, name: str) -> bool:
        """Below 8 bits, Linear weights are int32-packed (`pack-quantized`); compressed-tensors' Embedding loader
        has only the unpacked layout (`int-quantized`: each code in an int8), and so do the layers the
        architecture's weight initialisation reads (`unpacked`) and those with zero points, which transformers 5
        loads packed only by decompressing the whole model, one scheme for all (vllm-project/llm-compressor#1618).
        Experts are packed at 8 bits too: transformers decompresses packed experts only (and has them symmetric)."""
        quantized = self.weights[name]
        packable = name in self.expert_layers or (quantized.format.bits < 8 and quantized.zero_point is None)
        return packable and name not in self.embeddings and name not in self.unpacked


def _scalar(gm: fx.GraphModule, value) -> float:
    tensor = stored_tensor(gm, value)
    if tensor is not None:
        if tensor.numel() != 1:
            raise NotExpressible("an activation quantizer with more than one scale")
        return float(tensor)
    return float(value)


def folder_module_name(node: fx.Node) -> str | None:
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
    module = folder_module_name(reader)
    return f"{op} in {module}" if module else op


def _holds_tensors(module: torch.nn.Module) -> bool:
    """Modules the graph calls that hold state (quantizers' scales); stateless ones (export's `_guards_fn`) only
    check shapes."""
    return any(True for _ in module.parameters()) or any(True for _ in module.buffers())


def _is(node, name: str) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and name in str(node.target)


def _weight_codes(gm: fx.GraphModule, codes_node) -> torch.Tensor | None:
    """The int8 codes a weight's dequantize reads: stored, or computed in the graph by a quantize of stored
    tensors that convert left unfolded (DeepSeek-V2's classifier kept `kv_b_proj`'s), folded here with the same
    op the program runs."""
    codes = stored_tensor(gm, codes_node)
    if codes is not None or not _is(codes_node, "quantize_per_channel"):
        return codes
    weight, scale, zero = (stored_tensor(gm, arg) for arg in codes_node.args[:3])
    if weight is None or scale is None or zero is None:
        return None
    return codes_node.target(weight, scale, zero, *codes_node.args[3:])


def _int8_linear(gm: fx.GraphModule, dequant: fx.Node) -> QuantizedWeight:
    codes_node, scale_node, zero_node, axis, qmin, qmax = dequant.args[:6]
    codes, scale, zero = _weight_codes(gm, codes_node), stored_tensor(gm, scale_node), stored_tensor(gm, zero_node)
    if codes is None or scale is None or axis != 0 or (qmin, qmax) != (-128, 127) or codes.dim() != 2:
        raise NotExpressible(f"weight quantizer {dequant.name} is not int8 per output channel")
    if zero is not None and bool((zero != 0).any()):
        raise NotExpressible(f"weight quantizer {dequant.name} is asymmetric")
    return QuantizedWeight(codes.to(torch.int8), scale.float().reshape(-1, 1), None,
                           WeightFormat(bits=8, group_size=None, symmetric=True))


def shift_to_signed(qmin: int, qmax: int, where: str) -> tuple[int, int]:
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
    bits, shift = shift_to_signed(qmin, qmax, f"input quantizer {where}")
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
    """Modules the graph calls that are activation quantizers feeding only linear layers or convolutions (QAT's);
    any other module holding tensors is something the folder's architecture does not have."""
    found = set()
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if not _holds_tensors(module):
            continue  # export's `_guards_fn`: shape checks only
        if not callable(getattr(module, "grid", None)) or not all(
                user.op == "call_function" and user.target in QUANTIZED_INPUT_READERS and user.args[0] is node
                for user in node.users):
            raise NotExpressible(f"the graph calls module '{node.target}' ({type(module).__name__}), which the "
                                 "folder's layers cannot hold")
        found.add(node)
    return found


def _float_conv_inputs(gm: fx.GraphModule, layout: FolderLayout) -> None:
    """Convolutions reading a QAT activation quantizer module's output: compressed-tensors quantizes no convolution's
    input, so they read float inputs in the folder (their weights are written float, `hf_folder_export._keep_float`),
    which the folder check measures as a model of its own."""
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in CONVOLUTION_CALLS and isinstance(node.args[0], fx.Node) \
                and node.args[0].op == "call_module" and (name := folder_module_name(node)):
            layout.float_inputs.add(name)


def _same_weight(a: QuantizedWeight, b: QuantizedWeight) -> bool:
    return a.codes.shape == b.codes.shape and torch.equal(a.codes, b.codes) and torch.equal(a.scale, b.scale)


def _int8_convs(gm: fx.GraphModule, nodes: list[fx.Node], source: dict[str, torch.Tensor]) -> dict[fx.Node, tuple]:
    """The weight quantizers among `nodes` that feed only the convolution of one module of the folder (int8 PTQ's
    per-channel weights of a ViT's patch embedding): node -> (module name, dequantized float weight, the graph's
    tensors it reads). The weight is computed by the graph's own op, so the folder holds exactly the stage's values."""
    found = {}
    for node in nodes:
        readers = list(node.users)
        names = {folder_module_name(reader) for reader in readers}
        if not _is(node, "dequantize_per_channel") or not readers or len(names) != 1 or not all(
                reader.op == "call_function" and reader.target in CONVOLUTION_CALLS and reader.args[1] is node
                for reader in readers):
            continue
        name = names.pop()
        stored = [stored_tensor(gm, arg) for arg in node.args[:3]]
        if name is None or f"{name}.weight" not in source or any(tensor is None for tensor in stored):
            continue
        weight = _as_source_shape(node.target(*stored, *node.args[3:], **node.kwargs), source[f"{name}.weight"])
        found[node] = (name, weight.detach(), [arg.target for arg in node.args[:3]])
    return found


def _as_source_shape(weight: torch.Tensor, source_weight: torch.Tensor) -> torch.Tensor:
    """A convolution weight in its module's shape: int8 PTQ runs a Conv1d as a 2-D convolution (its kernel given
    a unit axis, `compression.ptq.conv1d`), whose weight has that axis too."""
    if weight.dim() == source_weight.dim() + 1 and any(
            size == 1 and weight.shape[:axis] + weight.shape[axis + 1:] == source_weight.shape
            for axis, size in enumerate(weight.shape)):
        return weight.reshape(source_weight.shape)
    return weight


def _dequantized_convs(layout: FolderLayout, convs: dict[fx.Node, tuple], consumed: set[str]) -> bool:
    """The int8 convolutions as their dequantized float weights, where they hold a minority of the quantized
    weights; their input quantizers are already left to run in float (`_activation_pair`), so the folder computes
    the stage's model with those activations in float, which the folder check measures as a model of its own.
    False where they hold most of them (left to be refused with the convolutions named)."""
    conv_elements = sum(weight.numel() for _, weight, _ in convs.values())
    total = conv_elements + sum(quantized.codes.numel() for quantized in layout.weights.values())
    if conv_elements > MAX_DEQUANTIZED_SHARE * total:
        return False
    for name, weight, tensors in convs.values():
        layout.floats[f"{name}.weight"] = weight
        consumed.update(tensors)
    layout.dequantized_convs = sorted({name for name, _, _ in convs.values()})
    return True


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
               tied: list[list[str]] | None = None, folded: dict[str, dict] | None = None) -> FolderLayout:
    """The folder's tensors as the stage's graph holds them; `source` is the folder model's state dict,
    `source_rounds` how many `aten.round` the uploaded program itself computes, `tables` the names of its
    `nn.Embedding` modules, `tied` its groups of shared tensors (`shared_groups`), `folded` the batch norms the
    stage folded into convolutions (`compression.quant.graph.fold_batchnorm`: conv layer -> its norm), whose shift
    a bias-free conv holds as `weight_bias`: it is the norm's bias in the folder (`hf_folder_export`), kept apart
    from the graph's tensors, where the unused norm's own parameters may still be."""
    tied = tied or []
    if not isinstance(gm, fx.GraphModule):
        raise NotExpressible(f"the stage's model is a {type(gm).__name__}, not a graph of the uploaded folder")
    layout = FolderLayout()
    consumed: set[str] = set()
    expressed: set[fx.Node] = set()  # quantize/dequantize nodes the folder holds as a layer's quantizer
    input_quantizers: dict[str, set[fx.Node]] = {}  # module name -> the quantize/dequantize nodes of its input
    shared_inputs: set[str] = set()  # modules called on different input grids: their inputs run in float
    _input_quantizer_modules(gm)
    _float_conv_inputs(gm, layout)
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target == aten.linear.default:
            weight, quantizer = node.args[1], _input_quantizer(gm, node.args[0])
            name = folder_module_name(node)
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
                # the codes' own quantize, where convert left one (`_weight_codes`), is the same quantizer
                quantize = weight.args[0] if _is(weight.args[0], "quantize_per_channel") else None
                reads = [*weight.args[:3], *(quantize.args[:3] if quantize is not None else ())]
                consumed.update(arg.target for arg in reads if isinstance(arg, fx.Node) and arg.op == "get_attr")
                expressed.update({weight, quantize} - {None})
                if quantize is not None:
                    layout.quantized_in_graph.add(name)
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
        elif node.op == "get_attr" and node.target.endswith(".weight_codes") and (
                stored_tensor(gm, node).dim() > 2):
            # a kernel int8 PTQ stores int8 with no int8 kernel to run it (`compression.ptq.kernelless_weights`: a
            # video model's Conv3d, a transposed convolution), one scale per slice of its first dimension; the
            # folder holds it as its dequantized float weight, as the convolutions above
            name = node.target.removeprefix(PROGRAM_PREFIX).removesuffix(".weight_codes")
            scale_attr = node.target.removesuffix("_codes") + "_scale"
            codes = stored_tensor(gm, node)
            scale = stored_tensor(gm, gm.graph.find_nodes(op="get_attr", target=scale_attr)[0])
            layout.floats[f"{name}.weight"] = codes.float() * scale.float().view(-1, *[1] * (codes.dim() - 1))
            layout.dequantized_convs.append(name)
            consumed.update({node.target, scale_attr})
        elif node.op == "get_attr" and node.target.endswith(".weight_codes"):
            name = node.target.removeprefix(PROGRAM_PREFIX).removesuffix(".weight_codes")
            # A re-exported program names a table tied to the output layer after that layer (`lm_head`): the
            # table is the embedding module's it is tied to.
            name = tied_module(name, tied, tables, table=True)
            if f"{name}.weight" not in source:
                raise NotExpressible(f"embedding table {node.target} does not belong to a module of the folder")
            layout.embeddings.add(name)
            layout.weights[name] = _embedding(stored_tensor(gm, node), stored_tensor(gm, gm.graph.find_nodes(
                op="get_attr", target=node.target.removesuffix("_codes") + "_scale")[0]))
            consumed.update({node.target, node.target.removesuffix("_codes") + "_scale"})
    unexpressed = [node for node in gm.graph.nodes if node not in expressed and _is(node, "quantize")]
    shared_reads = [node for node in unexpressed if _is(node, "dequantize_per_tensor") and node.args[0] in expressed
                    and _is(node.args[0], "quantize_per_tensor")]
    layout.float_reads = sorted(node.name for node in shared_reads)
    unexpressed = [node for node in unexpressed if node not in shared_reads]
    pairs = {member for node in unexpressed for member in _activation_pair(node)}
    _run_in_float(layout, pairs)
    unexpressed = [node for node in unexpressed if node not in pairs]
    convs = _int8_convs(gm, unexpressed, source)
    if convs and _dequantized_convs(layout, convs, consumed):
        unexpressed = [node for node in unexpressed if node not in convs]
    if unexpressed:  # e.g. a weight quantizer of an op that is no linear layer (GPT-2's Conv1D addmm, a conv)
        # A few such layers (a ViT's patch-embedding convolution) can stay float; a CNN's many cannot usefully.
        modules = sorted({PROGRAM_PREFIX + module for node in unexpressed for user in node.users
                          if (module := folder_module_name(user))})
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
        norm = (folded or {}).get(attr.removesuffix(".weight_bias"), {}).get("batch_norm")
        if attr.endswith(".weight_bias") and norm is not None and norm.startswith(PROGRAM_PREFIX):
            layout.folded_shifts[norm.removeprefix(PROGRAM_PREFIX)] = tensor.detach()
            continue
        if AFFINE_BATCH_NORM.fullmatch(attr):
            # int8 PTQ's batch norm with no conv before it, as x * scale + shift of its frozen statistics
            # (`compression.ptq.batch_norm_affine`): the folder's norm computes the same from the checkpoint's own
            # statistics, which it holds (`hf_folder_export` copies the tensors the graph lacks from the source)
            layout.affine_norms += 1
            continue
        if not attr.startswith(PROGRAM_PREFIX) or name not in source:
            if tensor.is_floating_point() and tensor.numel() > 1:
                raise NotExpressible(f"the graph holds a tensor '{attr}' that is no tensor of the folder's model "
                                     "(a different architecture or inserted operations)")
            continue
        layout.floats[name] = tensor.detach()  # shapes are checked against the config by `fitted_config`
    return layout


def tied_module(name: str, tied: list[list[str]], tables: frozenset[str], table: bool) -> str:
    """The module that uses module `name`'s weight as an embedding table (`table`) or as a layer's weight: `name`
    itself, or the one module of the other kind that shares its weight in the source (a tied output layer and
    input embedding, which a program reads under one name). `tied`: the source's groups of shared tensors
    (`shared_groups`); `tables`: its `nn.Embedding` modules."""
    if (name in tables) == table:
        return name
    partners = [other.rsplit(".", 1)[0] for names in tied if f"{name}.weight" in names for other in names
                if other.endswith(".weight") and (other.rsplit(".", 1)[0] in tables) == table]
    return partners[0] if len(partners) == 1 else name


@contextlib.contextmanager
def quantizers_left_out(gm: torch.nn.Module, layout: FolderLayout):
    """Within the block, graph `gm` computes what the folder does: the activation quantizers the folder runs in
    float (`layout.float_activations`), the quantized reads of other ops where the folder reads the float
    activation (`layout.float_reads`) and the input quantizers of the layers reading float inputs there
    (`layout.float_inputs`) are passed by; the graph is restored after."""
    bypassed = {}  # node -> its (args, kwargs) before
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        if node.name in layout.float_activations:  # every reader of its dequantized values reads the float ones
            for dequantized in node.users:
                for reader in list(dequantized.users):
                    bypassed.setdefault(reader, (reader.args, reader.kwargs))
                    reader.replace_input_with(dequantized, node.args[0])
        elif node.name in layout.float_reads:  # its readers read the quantizer's float input
            for reader in list(node.users):
                bypassed.setdefault(reader, (reader.args, reader.kwargs))
                reader.replace_input_with(node, node.args[0].args[0])
        elif node.target in QUANTIZED_INPUT_READERS and folder_module_name(node) in layout.float_inputs:
            quantized = node.args[0]
            if not isinstance(quantized, fx.Node):
                continue
            if quantized.op == "call_module":  # QAT's activation quantizer module
                unquantized = quantized.args[0]
            elif _is(quantized, "dequantize_per_tensor") and _is(quantized.args[0], "quantize_per_tensor"):
                unquantized = quantized.args[0].args[0]
            else:
                continue
            bypassed.setdefault(node, (node.args, node.kwargs))
            node.update_arg(0, unquantized)
    if bypassed:
        gm.recompile()
    try:
        yield bool(bypassed)
    finally:
        for node, (args, kwargs) in bypassed.items():
            node.args, node.kwargs = args, kwargs
        if bypassed:
            gm.recompile()
