"""A stage's model written back as the Hugging Face folder it came from, in compressed-tensors format, so that
`from_pretrained(folder)` loads the compressed encoder or classifier (issue 10).

The stage's graph is read as the folder's tensors by `compression.hf_folder_graph` (int8 linears with their static
input quantizers, quantized embedding tables, the general path's packed weights, float layers; what runs in float).

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
import math
import re
import shutil
from pathlib import Path

import torch
from torch import fx

from compression.archive import DEFAULT_LIMITS, ArchiveLimits
from compression.archive.pt2 import read_pt2
from compression.archive.sentence_transformers import SentenceEmbedding
from compression.fidelity import examples_moved, relative_max_gap
from compression.half_precision import half_precision
from compression.hf_folder_graph import (
    MAX_DEQUANTIZED_SHARE,
    PROGRAM_PREFIX,
    FolderLayout,
    NotExpressible,
    folder_module_name,
    quantizers_left_out,
    read_graph,
    shift_to_signed,
    tied_module,
)
from compression.hf_folder_variant import Measure, measured_variant
from compression.hf_program import load_folder_model
from compression.hf_whole_model_folder import (
    ENCODER_FEATURES,
    keep_shared_tables_float,
    prefixed_targets,
    whole_model_tensors,
)
from compression.llm import export
from compression.llm.init_reads import init_read_layers
from compression.llm.quantize import QuantizedWeight, WeightFormat
from compression.moe_experts import is_router
from compression.moe_folder import (
    StackedExpertsNotWritable,
    StackedProjection,
    checkpoint_expert_weights,
    checkpoint_experts,
    restack,
    split_source,
    stacked_projections,
)
from compression.ptq.addmm_linear import LINEAR_WEIGHT_SUFFIX
from compression.ptq.graph_rewrites import stored_tensor
from compression.sentence_pooling import copy_sentence_transformers_files
from compression.tied_copies import shared_groups

aten = torch.ops.aten
# Largest difference allowed between the folder's output and the stage model's, relative to the output's scale:
# this, or a quarter of the stage model's own distance from the float model, whichever is larger. Both compute the
# same dequantized graph; with static input quantizers, values a rounding ulp from a grid tie land on different
# codes in transformers' kernels (measured on all-MiniLM-L6-v2 int8: 0.04 of the scale, against 0.89 between the
# .pt2 and fp32, both at sentence cosine 0.993 to fp32). Weights are compared exactly (`_wrong_weights`); what
# the structural checks of `read_graph` could still miss (a missing operation) differs by about the output's scale.
MAX_RELATIVE_DIFFERENCE = 1e-3
SHARE_OF_COMPRESSION_ERROR = 0.25
MIN_SPLIT_GROUP = 8  # narrowest group a zero-padded last group may be cut into (`_dividing_width`)
# A sentence embedding pools the tokens: the compression's own per-token error averages out there, while a tie
# rounded the other way early on moves every token of a sentence alike. Measured on all-MiniLM-L6-v2 int8 (mean
# pooling + normalize): the folder 0.036 of the scale from the stage model, the stage model 0.133 from fp32. So
# pooled outputs may differ by half the compression's error, provided the folder is itself no further from the
# float model than the stage model is (by MAX_FOLDER_ERROR_GROWTH): a missing operation fails both.
SHARE_OF_COMPRESSION_ERROR_POOLED = 0.5
MAX_FOLDER_ERROR_GROWTH = 1.25
# A tie moves only the examples it lands in (through attention, every token of that example), while an operation
# the folder lacks moves every example. Measured on a tiny T5 encoder int8: 7 of 8 sentences identical, the eighth
# 0.0081 of the scale away (the stage model 0.031 from fp32). So where no quantizer was left out and at most this
# share of the examples moved, the outputs may differ by the pooled share of the compression's error.
MAX_SHARE_OF_EXAMPLES_MOVED_BY_TIES = 0.5
MAX_CONFIG_FIELDS = 4  # config fields tried together when fitting pruned widths
_HEAD_COUNT = re.compile(r"(^|_)(num_)?(attention_|key_value_|kv_)?heads$|^n_head$")
_HEAD_SIZE = re.compile(r"head_(dim|size)$")


def allowed_difference(compression_error: float, folder_error: float, *, pooled: bool, quantizers_left_out: bool,
                       examples_moved: int, examples: int) -> float:
    """The largest difference, relative to the output's scale, between the folder's output and the stage model's
    that rounding ties explain (see the constants above); `folder_error` and `compression_error` are the
    folder's and the stage model's distances from the float model."""
    share = SHARE_OF_COMPRESSION_ERROR
    ties_only = not quantizers_left_out and examples_moved <= MAX_SHARE_OF_EXAMPLES_MOVED_BY_TIES * examples
    if (pooled or ties_only) and folder_error <= MAX_FOLDER_ERROR_GROWTH * compression_error:
        share = SHARE_OF_COMPRESSION_ERROR_POOLED
    return max(MAX_RELATIVE_DIFFERENCE, share * compression_error)


def computes_something_else(difference_in_float: float, allowed_in_float: float, folder_error: float,
                            compression_error: float) -> bool:
    """Whether a folder's output differs from the stage's model by more than rounding explains: by more than allowed
    even with the activation quantizers it cannot hold left out of the stage's model, and further from the float
    model than the stage's model is. Rounding ties, flipped in one layer and carried through the next, grow with
    depth and width (wav2vec2-base's int8: 0.039 of the scale over 12 layers of width 768, 0.0097 over 2, 0 in the
    tiny model) but leave the folder as close to the float model as the stage's model (0.0431 against 0.0434); an
    operation the folder lacks puts it about the output's scale away."""
    return (difference_in_float > allowed_in_float
            and folder_error > MAX_FOLDER_ERROR_GROWTH * compression_error)


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


def _folded_norms_as_identities(layout: FolderLayout, folded: dict[str, dict], source_model: torch.nn.Module) -> None:
    """Each batch norm the stage folded into the convolution before it (both PTQ paths fold them before
    quantizing, and report them as `folded_batch_norms`) is written as the identity plus the folded bias: weight 1,
    running mean 0, running variance 1 - eps (so that variance + eps is 1), and bias the folded shift where the conv
    had no bias of its own to hold it (`read_graph` kept it apart). The folder's architecture still runs the norm;
    it then changes nothing."""
    for conv, details in folded.items():
        name = details["batch_norm"].removeprefix(PROGRAM_PREFIX)
        try:
            norm = source_model.get_submodule(name)
        except AttributeError:
            continue  # not a module of the folder's model: its tensors are refused as foreign by the check
        if not isinstance(norm, torch.nn.modules.batchnorm._BatchNorm) or not norm.track_running_stats:
            continue
        channels = norm.num_features
        layout.floats[f"{name}.running_mean"] = torch.zeros(channels)
        layout.floats[f"{name}.running_var"] = torch.full((channels,), 1.0 - norm.eps)
        shift = layout.folded_shifts.get(name)
        if not norm.affine and shift is not None:
            continue  # no bias to hold the shift: left as it was, and the folder check finds the output differs
        if norm.affine:
            layout.floats[f"{name}.weight"] = torch.ones(channels)
            # the shift is in the conv's own bias where it had one
            layout.floats[f"{name}.bias"] = shift if shift is not None else torch.zeros(channels)
        layout.folded_norms.append(name)


def _unpack_init_reads(layout: FolderLayout, source_model: torch.nn.Module) -> list[str]:
    """Layers below 8 bits whose weight the architecture's weight initialisation reads (Mamba's out_proj,
    GPT-BigCode's c_proj, ModernBERT's and Falcon's linears: `compression.llm.init_reads`) are stored one code per
    int8 (`int-quantized`), as their `weight`: packed, they have none, and transformers could not load the folder
    ("'Linear' object has no attribute 'weight'"). Returns their names. Before 2026-12-05 they were written as
    dequantized float weights, and a folder where they held over half the quantized weights was not written
    (RWKV, T5, ModernBERT's and Falcon's QAT); twice a packed layer's bytes is still a quarter of float32's."""
    try:
        read = set(init_read_layers(lambda: type(source_model)(source_model.config))) & set(layout.weights)
    except Exception:  # noqa: BLE001 - a class not built from its config alone: loading the folder is the check
        return []
    read = {name for name in read if layout.packed(name)}
    layout.unpacked |= read
    return sorted(read)


def _modules_with_own_forward(source_model: torch.nn.Module, layout: FolderLayout) -> str:
    """compressed-tensors replaces a quantized module's forward with its own (`linear` / `embedding` of the
    decompressed weight, its input quantizer first), which breaks a module class computing something else in its
    forward (OPT's learned positions and RoFormer's sinusoidal ones take a mask or a shape; I-BERT's QuantLinear).
    Such an embedding table is written as float: its dequantized values, so the folder computes what the stage's
    model computes (`dequantized_tables`). So is a mixture of experts' router (its own forward picks the top
    experts), its input in float like the experts' (`dequantized_routers`). Other such linear layers are written
    quantized and left to the check of the loaded folder (measured: Falcon's `FalconLinear`, `x @ W.T + b`, loads
    and matches; I-BERT's `QuantLinear` fails on its first call): returned is what a refusal's reason then adds."""
    modules = dict(source_model.named_modules())
    own = sorted(name for name in {*layout.weights, *layout.inputs}
                 if name in modules and type(modules[name]).forward not in (torch.nn.Linear.forward,
                                                                            torch.nn.Embedding.forward))
    for name in [name for name in own if name in layout.embeddings and name not in layout.inputs]:
        layout.write_float(name)
        layout.embeddings.discard(name)
        layout.dequantized_tables.append(name)
        own.remove(name)
    for name in [name for name in own if is_router(modules, name)]:
        if name in layout.weights:
            layout.write_float(name)
        if layout.inputs.pop(name, None) is not None:
            layout.float_inputs.add(name)
        layout.dequantized_routers.append(name)
        own.remove(name)
    return (f"; the quantized layer '{own[0]}' is a {type(modules[own[0]]).__name__}, which computes its own "
            "forward, which compressed-tensors replaces with a plain linear layer's" if own else "")


def _layout_shapes(layout: FolderLayout) -> dict[str, torch.Size]:
    """The shape of each of the folder model's tensors the graph gives (quantized experts: their stacked tensor's)."""
    shapes = {name: tensor.shape for name, tensor in layout.floats.items()}
    shapes |= {f"{name}.weight": quantized.codes.shape for name, quantized in layout.weights.items()
               if name not in layout.expert_layers}
    return shapes | layout.stacked_experts


def fitted_config(source_model: torch.nn.Module, layout: FolderLayout) -> dict:
    """The source's config, with the integer fields structured pruning changed (e.g. `intermediate_size` when every
    layer's MLP kept the same number of channels) set so that the architecture's tensors have the graph's shapes.

    Each dimension that changed gives old -> new; the config fields holding an old value take the new one, and the
    architecture built from that config (on the meta device) must then have every tensor's shape. Head counts
    are tried at the ratio a projection shrank by (`_field_options`): a Llama's heads pruned alike in every layer
    are `num_attention_heads` and `num_key_value_heads` with `head_dim` kept. Layers shrunk by different amounts,
    or sizes no config field holds (BERT's heads: its head size is `hidden_size / num_attention_heads`, and
    transformers 5 has no `pruned_heads`), raise NotExpressible."""
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
    options = {} if uneven else _field_options(config, {old: next(iter(new)) for old, new in changes.items()})
    candidates = list(options)
    example = next(iter(changed))
    why = (f"a Hugging Face config has one width per kind of layer, and no change of its fields {candidates} gives "
           f"every tensor the pruned graph's shape (e.g. '{example}': {list(changed[example])}, was "
           f"{list(source[example].shape)}): layers shrunk by different amounts cannot be described (the .pt2 "
           "holds the pruned model)")
    expected = {**shapes, **{name: source[name].shape for name in layout.from_source}}
    unexplained = set(changed)  # by the config that explains the most shapes
    # The fewest fields that explain every shape: a field that merely holds the same number (BERT-tiny's 64
    # positions beside 64 MLP channels) stays as it is.
    refused = ""  # why transformers refused the head counts the shapes call for
    for fields in _field_trials(options):
        fields |= _kept_head_dim(source_model, config, fields)
        try:
            with torch.device("meta"):
                rebuilt = type(source_model)(type(source_model.config).from_dict(config | fields)).state_dict()
        except Exception as exc:  # noqa: BLE001 - a config class or model refusing these values is not the fit: a
            # head count that does not divide hidden_size, Falcon's rope validation, a read-only derived field
            if any(_HEAD_COUNT.search(key) for key in fields):
                refused = f" (transformers refuses {fields}: {str(exc).strip().splitlines()[-1].strip()[:200]})"
            continue
        wrong = {name for name, shape in expected.items() if name not in rebuilt or rebuilt[name].shape != shape}
        if not wrong:
            layout.config_changes = fields
            return config | fields
        unexplained = min(unexplained, wrong, key=len)
    raise NotExpressible(f"{why}{refused}. To prune only what a config can describe, exclude the layers it cannot: "
                         f"\"exclude\": {json.dumps(exclude_patterns(unexplained))}")


def _field_options(config: dict, changes: dict[int, int]) -> dict[str, list[int]]:
    """Each integer config field that may hold a changed size, with the values to try: a width that changed takes
    its new size; a head count (`num_attention_heads`, `num_key_value_heads`, `n_head`) shrinks as a projection's
    rows did (4 heads of 64 rows at 64 -> 32 rows: 2), since heads pruned in every layer alike change no width
    the config holds."""
    options = {}
    for key, value in config.items():
        if type(value) is not int or _HEAD_SIZE.search(key):  # pruning removes whole heads: never their width
            continue  # (GLM's head_dim 128 beside 128 MLP channels fitted 4 heads of 64 for 2 of 128)
        shrunk = {value * new // old for old, new in changes.items() if value * new % old == 0 and new < old}
        if _HEAD_COUNT.search(key) and shrunk - {0}:
            options[key] = sorted(shrunk - {0} | ({changes[value]} if value in changes else set()), reverse=True)
        elif value in changes:
            options[key] = [changes[value]]
    return options


def _field_trials(options: dict[str, list[int]]):
    """Field changes to try, the fewest fields first."""
    for count in range(1, min(len(options), MAX_CONFIG_FIELDS) + 1):
        for keys in itertools.combinations(options, count):
            for values in itertools.product(*(options[key] for key in keys)):
                yield dict(zip(keys, values))


def _kept_head_dim(source_model: torch.nn.Module, config: dict, fields: dict) -> dict:
    """With fewer heads, an architecture that derives its head size from `hidden_size / num_attention_heads` (no
    `head_dim` in its config: Qwen2, Mistral's older configs) would make every head wider; `head_dim` is then set
    to the size the model's attention modules use."""
    if config.get("head_dim") is not None or not any(_HEAD_COUNT.search(key) for key in fields) or \
            isinstance(getattr(type(source_model.config), "head_dim", None), property):  # Falcon's: derived, read-only
        return {}
    sizes = {module.head_dim for module in source_model.modules() if type(getattr(module, "head_dim", None)) is int}
    return {"head_dim": sizes.pop()} if len(sizes) == 1 else {}


def _untie_word_embeddings(config: dict) -> None:
    """Set `tie_word_embeddings` false wherever the config (as a dict) sets it true: at the top, and in a nested
    model's config (a VisionEncoderDecoderModel's `decoder`, a multimodal model's `text_config`), whose own tie
    transformers applies too."""
    if config.get("tie_word_embeddings"):
        config["tie_word_embeddings"] = False
    for value in config.values():
        if isinstance(value, dict) and "model_type" in value:
            _untie_word_embeddings(value)


def exclude_patterns(tensor_names: set[str]) -> list[str]:
    """`PruneSpec.exclude` patterns (matched against the stage program's parameter names) that keep whole the
    modules of `tensor_names`, one pattern per kind of layer: layer indices become '*'."""
    modules = {re.sub(r"\.\d+\.", ".*.", name.rsplit(".", 1)[0]) for name in tensor_names}
    return sorted(f"*{module}.*" for module in modules)


def _merge_source(layout: FolderLayout, source: dict[str, torch.Tensor]) -> None:
    for name, tensor in source.items():
        module = name.rsplit(".", 1)[0]
        quantized = name.endswith(".weight") and module in layout.weights or name in layout.stacked_experts
        if name not in layout.floats and name not in layout.tied_copies and not quantized:
            layout.floats[name] = tensor
            layout.from_source.append(name)


def _weights_read(gm: fx.GraphModule) -> dict[str, torch.Tensor]:
    """Each module's float weight as the graph's ops read it (module name -> tensor), whatever the attribute's
    name: a re-exported program keeps one name for tensors that were tied."""
    reads = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and (module := folder_module_name(node)) is not None:
            for arg in node.args:
                if isinstance(arg, fx.Node) and arg.op == "get_attr" and arg.target.endswith(".weight"):
                    reads.setdefault(module, stored_tensor(gm, arg))
    return reads


def _fill_tied(gm: fx.GraphModule, tied: list[list[str]], layout: FolderLayout, tables: frozenset[str]) -> bool:
    """Tensors the source model shares (a causal LM's output layer and input embedding): the stage's program reads them
    under one name (`compression.tied_copies`), so each module's float weight is the one its op reads, and a name the
    graph lacks gets the values the stage computes with (a quantized weight's dequantized values), not the upload's.
    Returns whether the folder must untie them: one of them is stored quantized, or with other values (iPQ of the
    output layer only), which transformers' tying would replace. Another handle of a quantized token table (T5's
    and BART's `encoder.embed_tokens` and `decoder.embed_tokens` of `shared`), which the graph never reads, holds the
    table's int8 codes too: written as its float values, two such copies made a T5-small int8 folder 199.5 MiB against
    the upload's 214.0."""
    reads = _weights_read(gm)
    untie = False
    for names in tied:
        modules = [name.rsplit(".", 1)[0] for name in names]
        for name, module in zip(names, modules):
            # (a tied bias, Granite Speech's CTC head's, is read under its own name: `reads` holds weights only)
            if name.endswith(".weight") and module not in layout.weights and reads.get(module) is not None:
                layout.floats[name] = reads[module].detach()
        table = next((module for module in modules if module in layout.embeddings), None)
        for name, module in zip(names, modules):
            if table and name == f"{module}.weight" and module in tables and module not in layout.weights \
                    and name not in layout.floats:
                layout.weights[module] = layout.weights[table]
                layout.embeddings.add(module)
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


def _experts_target(layer: str) -> str:
    """A compressed-tensors target naming the experts of one projection (`...experts.3.w1` -> the regex
    `re:^...experts\\.\\d+\\.w1$`): all of them are quantized alike (`checkpoint_experts`)."""
    return "re:^" + re.sub(r"experts\\\.\d+\\\.", lambda _: r"experts\.\d+\.", re.escape(layer)) + "$"


def _schemes(layout: FolderLayout) -> list[dict]:
    """One compressed-tensors scheme per distinct (weights, inputs, storage), targeting its modules by name; the
    per-expert layers by a regex that names them, which is how transformers finds the one scheme of a model's
    experts (`get_experts_scheme`: a group with a `re:` target mentioning "experts")."""
    groups: dict[str, dict] = {}
    expert_schemes: set[str] = set()
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
        expert = name in layout.expert_layers
        key = repr((expert, sorted(scheme.items())))
        targets = groups.setdefault(key, {**scheme, "targets": []})["targets"]
        target = _experts_target(name) if expert else name
        if target not in targets:
            targets.append(target)
        if expert:
            expert_schemes.add(key)
    if len(expert_schemes) > 1:
        raise NotExpressible("the stage quantized the experts in more than one format; transformers loads one "
                             "format for a model's experts")
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


def load_written_folder(folder: Path, task: str, embedding: SentenceEmbedding | None = None,
                        prompts: list[str] | None = None) -> torch.nn.Module:
    """The folder as transformers loads it (with compressed-tensors installed: weights decompressed at the first
    call, each static input quantizer applied), wrapped like the upload (token inputs, the task's one output,
    pooled like the program when it outputs a sentence embedding)."""
    return load_folder_model(folder, task, embedding, prompts=prompts)


def _wrong_weights(loaded: torch.nn.Module, model: torch.nn.Module, layout: FolderLayout,
                   source_model: torch.nn.Module) -> list[str]:
    """Quantized modules whose weight, as transformers decompressed it, is not the stage model's: exact, unlike
    the outputs, which static input quantizers may round differently at ties. The stage's weight is its float
    parameter where it keeps one (QAT, the general path), else the codes read from its graph dequantized."""
    parameters = dict(model.named_parameters())
    experts = checkpoint_expert_weights(loaded, source_model, layout.expert_layers) if layout.expert_layers else {}
    wrong = []
    for name, quantized in layout.weights.items():
        stored = None if name in layout.quantized_in_graph else parameters.get(f"{PROGRAM_PREFIX}{name}.weight")
        expected = stored.detach().float() if stored is not None else quantized.dequantize()
        got = (experts[name] if name in experts else loaded.get_submodule(name).weight).detach().float()
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-5, atol=1e-7):
            wrong.append(name)
    return wrong


def write_stage_folder(model: torch.nn.Module, source_folder: Path, task: str, output_dir: Path,
                       example_inputs: tuple[torch.Tensor, ...], packed_path: Path | None = None,
                       source_rounds: int = 0, embedding: SentenceEmbedding | None = None,
                       measure: Measure | None = None, stage_metrics: dict | None = None,
                       prompts: list[str] | None = None) -> dict:
    """Write the stage's `model` as a folder of the source's architecture to `output_dir`; returns what was
    written (format, quantized modules, copied tensors, the check against the stage's model). `packed_path`: the
    stage's `packed.safetensors` (general PTQ path), whose integer weights the model holds dequantized. Raises
    NotExpressible when the model cannot be written so or the written folder computes something else.
    `embedding`: the sentence embedding the stage's program outputs; the folder's transformer output is pooled
    the same way before the comparison. A sentence-transformers source's own files are copied unchanged.
    `measure` (the job's evaluation of a model) and `stage_metrics` (what it gave the stage's model): a folder
    that differs from the stage's model only by activation quantizers it cannot hold is measured itself and kept
    if it scores no worse (`compression.hf_folder_variant`). `prompts`: a zero-shot image classifier's candidate
    texts (the program holds their embeddings as buffers of its own, which no folder holds)."""
    # A quantizing stage of a half-precision upload ran in float32 (`compression.half_precision`): its folder's
    # float tensors and compute dtype are float32 too, so transformers runs what the stage measured.
    float_model = load_folder_model(source_folder, task, embedding,
                                    dtype="auto" if half_precision(model) else torch.float32, prompts=prompts)
    source_model = float_model.model
    source = source_model.state_dict()
    computed = frozenset(name for name, _ in source_model.named_buffers()) - set(source)
    # ... and plain tensor attributes the architecture builds from its config (VideoMAE's sinusoid position table)
    computed |= {f"{module_name}.{attr}".lstrip(".") for module_name, module in source_model.named_modules()
                 for attr, value in vars(module).items() if isinstance(value, torch.Tensor)}
    computed |= {name for name, _ in float_model.named_buffers(recurse=False)}  # the label embeddings
    _refuse_transposed_layers(source_model, model)  # before read_graph, which would call them foreign tensors
    tables = frozenset(name for name, module in source_model.named_modules() if isinstance(module, torch.nn.Embedding))
    tied = shared_groups(source.items())
    # A mixture of experts' program runs each expert as linear layers: read against the source split so too, and
    # stacked back into the folder's tensors (`compression.moe_folder`).
    experts = stacked_projections(source_model)
    program_source = split_source(source, experts) if experts else source
    folded = ((stage_metrics or {}).get("method_metrics") or {}).get("folded_batch_norms") or {}
    layout = read_graph(model, program_source, source_rounds, computed, tables, tied, folded)
    _folded_norms_as_identities(layout, folded, source_model)
    _refuse_transposed_layers(source_model, model, layout)
    if packed_path is not None:
        add_packed_weights(layout, packed_path, program_source, tables, tied)
    try:
        _experts_as_checkpoint_layers(layout, experts, source_model)
        restack(layout.floats, set(layout.weights) | set(layout.inputs), experts)
    except StackedExpertsNotWritable as exc:
        raise NotExpressible(f"this model is a mixture of experts: {exc}") from exc
    unpacked = _unpack_init_reads(layout, source_model)
    own_forward = _modules_with_own_forward(source_model, layout)
    untied = _fill_tied(model, tied, layout, tables)
    _merge_source(layout, source)
    if output_dir.exists():
        shutil.rmtree(output_dir)
    whole = getattr(float_model, "encoder_of", None)  # an encoder-decoder's encoder: the folder is the whole model
    if whole is not None:
        keep_shared_tables_float(whole, layout)
    tensors = _tensors(layout)
    if whole is not None:
        tensors = _unshared(whole_model_tensors(whole, tensors))
    writer = export.ShardWriter(output_dir, 1)
    writer.write(tensors)
    writer.finish()
    config = fitted_config(source_model, layout)
    config.pop("quantization_config", None)
    if untied:
        # A causal LM's output layer shares the input embedding's table (GPT-2, Llama 3.2, Qwen2.5, Gemma): once a
        # stage quantized or changed one of them, transformers must not tie them again when it loads the folder
        # (it would replace the quantized output layer with the table, or fail to find a packed layer's weight).
        _untie_word_embeddings(config)
    # The class whose weights the folder holds: an encoder-decoder checkpoint's features are written as its
    # encoder-only class (T5EncoderModel), which the saved name (T5ForConditionalGeneration) would not load.
    config["architectures"] = [type(whole.whole if whole is not None else source_model).__name__]
    schemes = _schemes(layout)
    if schemes:
        # the schemes target quantized modules by name, so a float layer is left alone either way; `ignore` says so
        ignore = sorted(layout.float_layers - set(layout.weights) - set(layout.inputs))
        if whole is not None:
            schemes, ignore = prefixed_targets(schemes, ignore, whole)
        config["quantization_config"] = export.config_from_schemes(schemes, ignore=ignore)
    export.write_config(output_dir, config, source_folder)
    sentence_transformers_files = copy_sentence_transformers_files(source_folder, output_dir)

    with torch.no_grad():
        expected = model(*example_inputs)
        # The stage's model with the activation quantizers the folder cannot hold left out (it runs those
        # activations in float): what the folder should compute exactly, which tells what a difference is from.
        with quantizers_left_out(model, layout) as left_out:
            expected_in_float = model(*example_inputs) if left_out else expected
        try:
            loaded = load_written_folder(output_dir, task, embedding, prompts)
            got = loaded(*example_inputs)  # the first call decompresses the weights
        except (AttributeError, KeyError, RuntimeError, TypeError, ValueError) as exc:
            # e.g. T5's weight initialisation, which reads `.weight` of linears compressed-tensors has packed;
            # I-BERT's QuantLinear, whose own forward reads the int8 codes as its weight
            shutil.rmtree(output_dir)
            raise NotExpressible(f"transformers cannot load and run the written compressed-tensors folder "
                                 f"({type(exc).__name__}: {str(exc)[:200]}){own_forward}; the stage's .pt2 is its "
                                 "model") from exc
        reference = float_model(*example_inputs)
        difference = relative_max_gap(got, expected)
        difference_in_float = relative_max_gap(got, expected_in_float) if left_out else difference
        compression_error = relative_max_gap(expected, reference)
        folder_error = relative_max_gap(got, reference)
        moved = examples_moved(got, expected, MAX_RELATIVE_DIFFERENCE)
        moved_in_float = examples_moved(got, expected_in_float, MAX_RELATIVE_DIFFERENCE) if left_out else moved
    allowed = allowed_difference(compression_error, folder_error, pooled=embedding is not None,
                                 quantizers_left_out=bool(left_out), examples_moved=moved, examples=len(got))
    # what the folder should compute exactly: the stage's model with the quantizers it cannot hold left out
    allowed_in_float = allowed_difference(compression_error, folder_error, pooled=embedding is not None,
                                          quantizers_left_out=False, examples_moved=moved_in_float,
                                          examples=len(got))
    wrong = _wrong_weights(loaded.model, model, layout, source_model)
    variant = None
    if wrong or not difference <= allowed:
        in_float = len(layout.float_activations) + len(layout.float_inputs) + len(layout.float_reads)
        structural = computes_something_else(difference_in_float, allowed_in_float, folder_error, compression_error)
        if not wrong and not structural:
            try:
                variant = measured_variant(loaded, measure, stage_metrics, in_float)
            except BaseException:  # scored worse, failed to run, or the job was cancelled: no folder either way
                shutil.rmtree(output_dir)
                raise
        if variant is None:
            shutil.rmtree(output_dir)
            why = ("the graph computes something the architecture does not" if structural
                   else f"{in_float} activation quantizers compressed-tensors cannot hold run in float there (e.g. "
                   f"{(layout.float_activations + sorted(layout.float_inputs))[:2]}), and with them in float the "
                   f"stage's model computes what the folder does ({difference_in_float:.3g}): a weight-only stage "
                   "(\"activations\": null) gets a folder that computes what its .pt2 does")
            raise NotExpressible((f"the folder's weight '{wrong[0]}' differs from the stage model's" if wrong else
                                  f"the folder's output differs from the stage's model by {difference:.3g} of its "
                                  f"scale (allowed {allowed:.3g}): {why}") + own_forward)
    return {"format": config.get("quantization_config", {}).get("format", "dense (float)"),
            "quantized_modules": len(layout.weights), "static_input_quantizers": len(layout.inputs),
            "float_activations": layout.float_activations, "float_input_layers": sorted(layout.float_inputs),
            "float_reads": layout.float_reads,
            "dequantized_tables": layout.dequantized_tables,
            "dequantized_routers": layout.dequantized_routers,
            "dequantized_convs": layout.dequantized_convs,
            "dequantized_uneven_groups": layout.dequantized_uneven_groups,
            "batch_norms_as_identities": layout.folded_norms,
            "affine_batch_norm_tensors_from_checkpoint": layout.affine_norms,
            "unpacked_for_weight_initialisation": unpacked,
            "copied_from_source": layout.from_source, "config_changes": layout.config_changes,
            "sentence_transformers_files": sentence_transformers_files,
            "compared_output": "sentence_embedding" if embedding is not None else float_model.output,
            "relative_difference_to_stage_model": difference,
            "examples_differing_from_stage_model": f"{moved} of {len(got)}",
            **({"measured_as_its_own_model": variant,
                "relative_difference_to_stage_model_in_float": difference_in_float} if variant else {}),
            "stage_model_relative_difference_to_float": compression_error,
            "folder_relative_difference_to_float": folder_error,
            "size_bytes": export.folder_bytes(output_dir),
            **({"encoder_features": ENCODER_FEATURES} if whole is not None else {})}


def _experts_as_checkpoint_layers(layout: FolderLayout, experts: list[StackedProjection],
                                  source_model: torch.nn.Module) -> None:
    """Quantized expert layers (the program's `...experts.gate_up_proj.3`) become the checkpoint's per-expert
    layers (`compression.moe_folder.checkpoint_experts`), in place; their static input quantizers run in float in
    the folder (transformers runs the experts on their dequantized weights)."""
    converted = checkpoint_experts(layout.weights, experts, source_model)
    for layer in converted.layers:
        layout.weights.pop(layer)
        if layout.inputs.pop(layer, None) is not None:
            layout.float_inputs.add(layer)
    layout.weights.update(converted.weights)
    layout.expert_layers = set(converted.weights)
    layout.stacked_experts = converted.stacked_shapes


def _per_row(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """A per-tensor, per-channel or per-group parameter as [rows, groups]."""
    return tensor.reshape(1, 1).expand(rows, 1) if tensor.numel() == 1 else tensor.reshape(rows, -1)


def _dividing_width(columns: int, group: int) -> int | None:
    """The group size that divides a row of `columns` and cuts no group of `group` columns across two: compressed-
    tensors has no shorter last group, which the packed format zero-pads. A row narrower than the group is one
    group, else the parts are gcd(columns, group) wide. Exact, as each part repeats its group's scale and zero
    point (`_regroup`); None where the parts would be narrower than MIN_SPLIT_GROUP (the scales would outweigh
    the codes: the layer is better written as its float weight, `_keep_float`)."""
    width = columns if columns < group else math.gcd(columns, group)
    return width if width >= MIN_SPLIT_GROUP else None


def _uneven_reason(columns: int, group: int) -> str:
    width = columns if columns < group else math.gcd(columns, group)
    return (f"its {columns} input columns in groups of {group} end in a group of {columns % group}; compressed-"
            f"tensors needs one group size that divides the row, and the widest that cuts no group across two is "
            f"{width}, under {MIN_SPLIT_GROUP}: a group size dividing {columns} gives a folder")


def _regroup(per_group: torch.Tensor, group: int, width: int, columns: int) -> torch.Tensor:
    """[rows, groups of `group`] scales or zero points -> [rows, columns // width], each part its group's."""
    return per_group[:, torch.arange(0, columns, width) // group].contiguous()


def add_packed_weights(layout: FolderLayout, packed_path: Path, source: dict[str, torch.Tensor],
                       tables: frozenset[str] = frozenset(), tied: list[list[str]] | None = None) -> None:
    """The general PTQ path's integer weights (`packed.safetensors`) into `layout`, replacing their dequantized
    float copies: per tensor, per channel or per group of input columns, 2-8 bits, symmetric or not; embedding
    tables per row or per group of a row. `tables`: the source's `nn.Embedding` modules, `tied` its groups of
    shared tensors (a tied table's layer weight is its output layer's)."""
    from compression.quant.packed import FORMAT, open_with_graph, unpack_codes

    _, tensors, manifest = open_with_graph(packed_path, FORMAT)
    convs = {}  # quantized convolutions left as their dequantized float copies: name -> weight elements
    uneven = {}  # layers no group size of MIN_SPLIT_GROUP or more divides, left so too: name -> (elements, why)
    for entry in manifest:
        attr = entry["attr"]
        name = tied_module(attr.removeprefix(PROGRAM_PREFIX).removesuffix(".weight"), tied or [], tables,
                           table=bool(entry.get("embedding")))
        if entry["dtype"] == "int" and len(entry["shape"]) > 2 and f"{name}.weight" in layout.floats:
            convs[name] = math.prod(entry["shape"])
            continue
        if entry["dtype"] != "int" or len(entry["shape"]) != 2 or f"{name}.weight" not in source:
            raise NotExpressible(f"'{attr}' is stored as {entry['dtype']} {entry['shape']}, which compressed-tensors "
                                 "has no layout for here (integer Linear weights and embedding tables only)")
        rows, columns = entry["shape"]
        qmin, group = entry["qmin"], entry.get("group_size")
        width = group if group is None or columns % group == 0 else _dividing_width(columns, group)
        if group is not None and width is None:  # Swin V2's position-bias MLP: 2 input columns in groups of 32
            uneven[name] = (rows * columns, f"'{attr}': {_uneven_reason(columns, group)}")
            continue
        bits, shift = shift_to_signed(qmin, entry["qmax"], f"'{attr}'")
        codes = unpack_codes(tensors[f"{attr}.codes"], entry["bits"], qmin, (rows, columns)) - shift
        scale = _per_row(tensors[f"{attr}.scale"].float(), rows).contiguous()
        stored = tensors.get(f"{attr}.zero_point")  # kept as zero point - qmin by the packed format
        zero = None if stored is None else _per_row(stored.to(torch.int32), rows) + qmin
        if zero is None and shift:  # a symmetric grid moved down: its zero is no longer at code 0
            zero = torch.zeros(scale.shape, dtype=torch.int32)
        if zero is not None:
            zero = (zero.expand_as(scale) - shift).to(torch.int8).contiguous()
        if width != group:
            scale = _regroup(scale, group, width, columns)
            zero, group = None if zero is None else _regroup(zero, group, width, columns), width
        layout.weights[name] = QuantizedWeight(codes.to(torch.int8), scale, zero,
                                               WeightFormat(bits=bits, group_size=group, symmetric=zero is None))
        if entry.get("embedding"):
            layout.embeddings.add(name)  # stored unpacked: compressed-tensors' Embedding loader reads no other
        layout.floats.pop(f"{name}.weight", None)
    _keep_float(layout, convs, uneven, manifest)


def _keep_float(layout: FolderLayout, convs: dict[str, int], uneven: dict[str, tuple[int, str]],
                manifest: list[dict]) -> None:
    """The quantized convolutions, and the layers whose rows no group size divides (`_dividing_width`), stay in
    the folder as their dequantized float weights (exact: the values the stage computes with; a float linear layer
    is named in the config's `ignore`) where they hold a minority of the quantized weights, as ConvBERT's
    depthwise convs and Swin V2's position-bias MLP do; a model made mostly of them (SqueezeBERT's Conv1d layers,
    a group size that divides no row) would get a float folder, which is refused."""
    total = sum(math.prod(entry["shape"]) for entry in manifest)
    kept = sum(convs.values()) + sum(elements for elements, _ in uneven.values())
    if kept > MAX_DEQUANTIZED_SHARE * total:
        share = f"they hold {kept / total:.0%} of the quantized weights: the folder would be a float model"
        if uneven:
            raise NotExpressible(f"{len(uneven)} of the quantized layers have rows no group size divides "
                                 f"({next(iter(uneven.values()))[1]}), {len(convs)} are convolutions, and {share}")
        shown = ", ".join(list(convs)[:3])
        raise NotExpressible(f"{len(convs)} of the quantized layers are convolutions ({shown}), which compressed-"
                             f"tensors has no layout for, and {share}")
    layout.dequantized_convs = sorted(convs)
    layout.dequantized_uneven_groups = sorted(uneven)


def rounding_ops(path: Path, limits: ArchiveLimits = DEFAULT_LIMITS) -> int:
    """How many `aten.round` calls the program at `path` makes (its top-level graph), read from the archive's
    graph description: a twentieth of the time torch takes to load the program (0.01 s against 0.3 s for a
    two-layer BERT)."""
    nodes = read_pt2(path, limits).program["graph_module"]["graph"]["nodes"]
    return sum(1 for node in nodes if node.get("target") == "torch.ops.aten.round.default")


def stage_folder_artifacts(result, source_folder: Path | list[Path], task: str,
                           example_inputs: tuple[torch.Tensor, ...], workdir: Path, ctx, source_rounds: int = 0,
                           embedding: SentenceEmbedding | None = None, hands_on: frozenset[int] = frozenset(),
                           prompts: list[str] | None = None) -> None:
    """Add to each stage of a folder job's `result` (a `PipelineResult`) its model as a zipped Hugging Face folder
    (`model.hf.zip`, kind `model.hf_folder`), and under the stage's metrics `hf_folder` what was written or why
    nothing could be. The folder is an extra download: a stage whose model it cannot express keeps its `.pt2`.
    `source_folder`: the upload's folder, or one per stage (a 'layers' student's folder from its stage on).
    `hands_on`: stages (a 'layers' student's training) whose written folder becomes the source of the stages after
    them that had its source: a later `ptq` is then checked against the trained float student, not the untrained
    one, so its tolerance is its own compression error. A folder that is not exactly the stage's model
    (`write_stage_folder`) is measured with the job's own evaluation (`PipelineResult.evaluate_model`).
    `prompts`: a zero-shot image classifier's candidate texts, which the folder's model is scored against."""
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
                                         source_rounds, embedding, result.evaluate_model, stage.metrics, prompts)
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
                                                quantization=details["format"],
                                                **({"computes": details["measured_as_its_own_model"]["computes"]}
                                                   if "measured_as_its_own_model" in details else {})))
        stage.metrics["hf_folder"] = {"written": True, **details, "size_bytes": archive.stat().st_size}
        stage_ctx.progress("hf_folder", 1, 1)
