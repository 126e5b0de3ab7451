"""Layer weights that the graph computes from parameters alone, computed once.

Some layers do not read their weight as stored: BiT's convolutions standardize it first (a batch norm over the
weight's own statistics). Both PTQ paths quantize layers whose weight is a stored tensor, so those layers stayed
float (BiT: 98 % of its weights, "weights stay float" warned). With the weights frozen, the computation gives one
tensor: it is stored in the parameter it was computed from, under the same name, and the layer reads that.
Computed only where the parameter feeds nothing else, so nothing is stored twice, and only from one parameter: a
weight-normed convolution (wav2vec2's positional convolution, direction and norm) stored in its direction would
give that parameter another meaning, and the model's Hugging Face folder (whose architecture recomputes the weight
from both) would no longer be writable; it stays float, as before.

An uploaded `.pt2` has no folder to write back: `store_factored_weights`, run as such a job loads the upload, stores
the weight of a layer under `torch.nn.utils.parametrizations.weight_norm` (WaveNet and HiFi-GAN vocoders, temporal
conv nets: `_weight_norm(v, g)` in front of the conv) or `spectral_norm` (GAN discriminators: `W / (u . (W v))`)
as the layer's own `weight`, which is what the parametrized module exposes in eager mode. Every method finds layers
by a stored weight, so such an upload got nothing: int8 PTQ left 94 % of a weight-normed TCN float, iPQ, pruning
and low-rank distillation found no layer. The program is the model in eval mode, where these weights are
constants; trained methods then train the weight itself, as after `remove_parametrizations`.
"""

from __future__ import annotations

import itertools

import torch
from torch import fx
from torch.fx.node import map_arg

from compression.graph_ops import returns_view
from compression.quant.graph import CONVOLUTION_CALLS, LINEAR_OPS, delete_tensor, get_tensor, set_tensor

LAYER_OPS = CONVOLUTION_CALLS | LINEAR_OPS
# op -> argument positions that hold a layer's weight and bias (an embedding's table comes first)
_OPERANDS = {**{op: (1, 2) for op in LAYER_OPS}, torch.ops.aten.embedding.default: (0,)}
# Ops whose value is not a function of their inputs alone
_RANDOM = ("dropout", "rand", "bernoulli", "normal", "multinomial")
_MAX_FACTORED_STEPS = 64  # a parametrization is a handful of ops; a larger constant computation is not one
# Ops that only move or copy values; most views are found by their schema (`_moves_values`)
_COPIES = {"clone", "contiguous", "_to_copy", "to", "reshape", "flatten", "unflatten", "detach", "lift_fresh_copy"}


def _cone(weight: fx.Node) -> list[fx.Node] | None:
    """The nodes `weight` is computed from, in graph order, when they read parameters and constants only (no model
    input, nothing random); None otherwise."""
    seen: dict[fx.Node, None] = {}
    stack = [weight]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        if node.op == "placeholder" or node.op == "call_module" or (
                node.op == "call_function" and any(word in str(node.target) for word in _RANDOM)):
            return None
        seen[node] = None
        stack.extend(node.all_input_nodes)
    order = {node: index for index, node in enumerate(weight.graph.nodes)}
    return sorted(seen, key=order.__getitem__)


def _evaluate(graph_module: fx.GraphModule, cone: list[fx.Node]) -> torch.Tensor:
    values: dict[fx.Node, object] = {}
    for node in cone:
        if node.op == "get_attr":
            values[node] = get_tensor(graph_module, node.target)
        else:
            args = map_arg(node.args, values.__getitem__)
            kwargs = map_arg(node.kwargs, values.__getitem__)
            values[node] = node.target(*args, **kwargs)
    return values[cone[-1]]


def store_computed_weights(graph_module: fx.GraphModule) -> list[str]:
    """Replace, in place, each conv/linear weight computed from one parameter of its shape (and constants) by its
    value, stored in that parameter; returns those parameters' names."""
    stored = []
    with torch.no_grad():
        for node in list(graph_module.graph.nodes):
            if node.op != "call_function" or node.target not in LAYER_OPS or len(node.args) < 2:
                continue
            weight = node.args[1]
            if not isinstance(weight, fx.Node) or weight.op != "call_function":
                continue
            cone = _cone(weight)
            if cone is None or any(user not in cone and user is not node for member in cone
                                   for user in member.users) or read_elsewhere(graph_module, cone):
                continue  # a parameter or a step that something else reads too: it would be stored twice
            if all(_moves_values(member) for member in cone if member.op == "call_function"):
                # the parameter reshaped (Mamba's conv weight squeezed and unsqueezed back): no value is
                # computed, and such a layer, called from its parent's forward, has no module of its own that
                # a Hugging Face folder could write its quantized weight to, so it stays as it was
                continue
            value = _evaluate(graph_module, cone)
            sources = [member for member in cone if member.op == "get_attr"]
            if not isinstance(value, torch.Tensor) or len(sources) != 1 \
                    or get_tensor(graph_module, sources[0].target).shape != value.shape:
                continue
            set_tensor(graph_module, sources[0].target, value.detach().clone())
            node.replace_input_with(weight, sources[0])
            for member in reversed(cone):  # the computation, now read by nothing
                if not member.users and member is not sources[0]:
                    graph_module.graph.erase_node(member)
            stored.append(sources[0].target)
    if stored:
        graph_module.recompile()
    return stored


def _moves_values(node: fx.Node) -> bool:
    """A view or copy: the op's values are its input's (squeeze, view, permute, transpose, clone, ...)."""
    target = node.target
    return isinstance(target, torch._ops.OpOverload) and (
        returns_view(target) or target._schema.name.split("::")[-1] in _COPIES)


def read_elsewhere(graph_module: fx.GraphModule, cone: list[fx.Node]) -> bool:
    """Another get_attr node of the graph (than those in `cone`) reads one of the cone's parameters."""
    targets = {member.target for member in cone if member.op == "get_attr"}
    return any(node.op == "get_attr" and node.target in targets and node not in cone
               for node in graph_module.graph.nodes)


def store_factored_weights(graph_module: fx.GraphModule) -> list[str]:
    """Replace, in place, each conv/linear weight or bias and each embedding table that is computed from several
    stored tensors (a parametrization's factors) by its value, stored as the layer's own attribute (`stem.weight`
    for `stem.parametrizations.weight.original0/1`); returns the stored names. Left computed where something else
    reads a factor or a step (it would be stored twice) and where the value takes more bytes than its factors (a
    weight written as a low-rank product)."""
    stored = []
    with torch.no_grad():
        for node in list(graph_module.graph.nodes):
            positions = _OPERANDS.get(node.target, ()) if node.op == "call_function" else ()
            for position in positions:
                weight = node.args[position] if position < len(node.args) else None
                if isinstance(weight, fx.Node) and weight.op == "call_function":
                    name = _store_factored(graph_module, node, weight, "weight" if position < 2 else "bias")
                    stored += [name] if name else []
    if stored:
        graph_module.graph.lint()
        graph_module.recompile()
    return stored


def _store_factored(graph_module: fx.GraphModule, layer: fx.Node, weight: fx.Node, default: str) -> str | None:
    cone = _cone(weight)
    if cone is None or len(cone) > _MAX_FACTORED_STEPS or any(
            user not in cone and user is not layer for member in cone for user in member.users) \
            or read_elsewhere(graph_module, cone):
        return None
    factors = [member for member in cone if member.op == "get_attr"]
    if len(factors) < 2:
        return None  # one parameter: `store_computed_weights`' case, at quantization
    tensors = [get_tensor(graph_module, member.target) for member in factors]
    stored_bytes = sum(tensor.nbytes for tensor in tensors if isinstance(tensor, torch.Tensor))
    traced = [_traced_bytes(member) for member in cone]
    if None in traced or max(traced) > 4 * stored_bytes:
        return None  # judged by the traced shapes before computing: an upload's graph may expand a factor hugely
    value = _evaluate(graph_module, cone)
    if not isinstance(value, torch.Tensor) or value.nbytes > stored_bytes:
        return None
    path, owner, name = _attribute_for(graph_module, [member.target for member in factors], default)
    owner._parameters.pop(name, None)  # a factor of that name (NFNet's raw `weight` beside its gain) is replaced
    owner._buffers.pop(name, None)
    if any(isinstance(tensor, torch.nn.Parameter) for tensor in tensors):
        owner.register_parameter(name, torch.nn.Parameter(value.detach().clone()))
    else:  # buffers alone (a fixed filterbank): still no parameter, as `stored_parameter` expects
        owner.register_buffer(name, value.detach().clone())
    target = f"{path}.{name}" if path else name
    with graph_module.graph.inserting_before(layer):
        read = graph_module.graph.get_attr(target)
    if "val" in weight.meta:
        read.meta["val"] = weight.meta["val"]
    layer.replace_input_with(weight, read)
    for member in reversed(cone):  # the computation and its factors, now read by nothing
        graph_module.graph.erase_node(member)
    for factor in {member.target for member in factors} - {target}:
        delete_tensor(graph_module, factor)
    return target


def _traced_bytes(node: fx.Node) -> int | None:
    """The bytes of the tensor `node` gives, from its traced value (None: unknown, or not one static tensor)."""
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor) or not all(isinstance(size, int) for size in value.shape):
        return None
    return value.numel() * value.element_size()


def _attribute_for(graph_module: fx.GraphModule, factors: list[str],
                   default: str) -> tuple[str, torch.nn.Module, str]:
    """The path of the module a parametrization sits on, that module and the attribute it computes
    (`stem.parametrizations.weight.original0` -> `stem`, `weight`); otherwise the innermost module holding every
    factor and `default`. A name in use by anything but a factor gets a `_stored` suffix."""
    paths = [factor.split(".") for factor in factors]
    cut = paths[0].index("parametrizations") if "parametrizations" in paths[0][:-2] else None
    if cut is not None and all(path[:cut + 2] == paths[0][:cut + 2] for path in paths):
        owner_path, name = paths[0][:cut], paths[0][cut + 1]
    else:
        owner_path = [parts[0] for parts in itertools.takewhile(lambda parts: len(set(parts)) == 1,
                                                                zip(*(path[:-1] for path in paths)))]
        name = default
    owner = graph_module.get_submodule(".".join(owner_path)) if owner_path else graph_module
    while hasattr(owner, name) and ".".join([*owner_path, name]) not in factors:
        name = f"{name}_stored"
    return ".".join(owner_path), owner, name
