"""The quantizable layers of a model, found in its graph.

Uploaded models are `torch.export` programs whose `.module()` runs `aten.conv*` / `aten.linear` on parameters
fetched with `get_attr` from small holder submodules. Plain `nn.Module`s are exported first, so that one graph
code path serves both. A layer is named after the submodule holding its weight (`conv1`, `layer1.0.conv2`, `fc`),
which is the name users see in the model's state dict minus `.weight`.
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass

import torch
from torch import fx

from compression.io import export_model
from compression.modes import eval_mode

CONV_OPS = {torch.ops.aten.conv1d.default, torch.ops.aten.conv2d.default, torch.ops.aten.conv3d.default}
LINEAR_OPS = {torch.ops.aten.linear.default}
# every call of a (non-transposed) convolution: the string-padded overloads and the generic one too
CONVOLUTION_CALLS = frozenset(CONV_OPS | {torch.ops.aten.conv1d.padding, torch.ops.aten.conv2d.padding,
                                         torch.ops.aten.conv3d.padding, torch.ops.aten.convolution.default})


@dataclass
class Layer:
    name: str  # weight owner, e.g. "layer1.0.conv2"
    node: fx.Node  # the conv/linear call
    weight_attr: str  # e.g. "layer1.0.conv2.weight"
    bias_attr: str | None

    @property
    def kind(self) -> str:
        return "linear" if self.node.target in LINEAR_OPS else "conv"


def as_graph_module(model: torch.nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """A private copy of `model` as an exported graph module (the caller's model is never modified)."""
    if isinstance(model, fx.GraphModule):
        return copy.deepcopy(model)
    return export_model(copy.deepcopy(model).eval(), example_inputs).module()


_BATCH_NORMS = (torch.ops.aten._native_batch_norm_legit_no_training.default, torch.ops.aten.batch_norm.default)


def fold_batchnorm(gm: fx.GraphModule) -> dict[str, dict]:
    """Fold every BatchNorm that directly follows a conv into the conv's weight and bias (eval statistics); returns
    what was folded: conv layer name -> {"batch_norm": the norm's module, "conv_had_bias": bool}, which a Hugging
    Face folder of the model needs to write the norm as the identity it has become."""
    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    eval_mode(gm)
    candidates = conv_batch_norm_pairs(gm)
    _fuse_conv_bn_(gm)
    remaining = set(gm.graph.nodes)
    return {conv: details for node, (conv, details) in candidates.items() if node not in remaining}


def conv_batch_norm_pairs(gm: fx.GraphModule) -> dict[fx.Node, tuple[str, dict]]:
    """The batch norms that torchao folds into the convolution before them (`_fuse_conv_bn_`, which int8 PTQ's
    `prepare_pt2e` runs too): norm node -> (conv layer name, {"batch_norm": the norm's module, "conv_had_bias"})."""
    from torchao.quantization.pt2e.utils import _is_conv_or_conv_transpose_node

    pairs = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in _BATCH_NORMS \
                or not _is_conv_or_conv_transpose_node(node.args[0]):
            continue
        conv, stack = node.args[0], node.meta.get("nn_module_stack")
        weight = _attr_of(conv.args[1])
        if weight is not None and stack:
            module = next(reversed(stack.values()))[0].split("@")[0]
            had_bias = len(conv.args) > 2 and conv.args[2] is not None
            pairs[node] = (weight.rpartition(".")[0], {"batch_norm": module, "conv_had_bias": had_bias})
    return pairs


def _attr_of(node) -> str | None:
    return node.target if isinstance(node, fx.Node) and node.op == "get_attr" else None


def find_layers(gm: fx.GraphModule) -> list[Layer]:
    """Conv and linear calls whose weight is a parameter, in execution order."""
    layers = []
    for node in gm.graph.nodes:
        if node.op != "call_function" or node.target not in CONV_OPS | LINEAR_OPS:
            continue
        weight_attr = _attr_of(node.args[1])
        if weight_attr is None:
            continue
        bias_attr = _attr_of(node.args[2]) if len(node.args) > 2 else None
        layers.append(Layer(weight_attr.rpartition(".")[0] or weight_attr, node, weight_attr, bias_attr))
    return layers


def matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def select_layers(layers: list[Layer], include: list[str], exclude: list[str]) -> list[Layer]:
    """The layers `include` names (all when empty) minus those `exclude` names; both PTQ paths select with it.
    A pattern that matches no layer is refused: a typo would otherwise quietly quantize something else."""
    chosen = [layer for layer in layers if (not include or matches(layer.name, include))
              and not matches(layer.name, exclude)]
    for field, patterns in (("include", include), ("exclude", exclude)):
        unknown = [p for p in patterns if not any(fnmatch.fnmatchcase(layer.name, p) for layer in layers)]
        if unknown:
            names = list(dict.fromkeys(layer.name for layer in layers))
            raise ValueError(f"{field} patterns {unknown} match no layer; layers are {names}")
    return chosen


def layer_bits(name: str, default: int, overrides: dict[str, int]) -> int:
    """The weight width of a layer: the last override pattern matching its name, else the default."""
    bits = default
    for pattern, value in overrides.items():
        if fnmatch.fnmatchcase(name, pattern):
            bits = value
    return bits


def get_tensor(gm: fx.GraphModule, attr: str) -> torch.Tensor:
    owner, _, leaf = attr.rpartition(".")
    return getattr(gm.get_submodule(owner) if owner else gm, leaf)


def set_tensor(gm: fx.GraphModule, attr: str, value: torch.Tensor) -> None:
    get_tensor(gm, attr).data.copy_(value)


def delete_tensor(gm: fx.GraphModule, attr: str) -> None:
    """Forget a parameter or buffer no node reads any more, so that no program stores or counts it."""
    owner, _, leaf = attr.rpartition(".")
    delattr(gm.get_submodule(owner) if owner else gm, leaf)


def ensure_bias(gm: fx.GraphModule, layer: Layer) -> str:
    """Give a bias-free layer a zero bias parameter (bias correction needs one) and return its attribute name."""
    if layer.bias_attr is not None:
        return layer.bias_attr
    weight = get_tensor(gm, layer.weight_attr)
    owner, _, leaf = layer.weight_attr.rpartition(".")
    holder = gm.get_submodule(owner) if owner else gm
    holder.register_parameter(f"{leaf}_bias", torch.nn.Parameter(torch.zeros(weight.shape[0]), requires_grad=False))
    bias_attr = f"{layer.weight_attr}_bias"
    args = list(layer.node.args) + [None] * (3 - len(layer.node.args))
    with gm.graph.inserting_before(layer.node):
        args[2] = gm.graph.get_attr(bias_attr)
    layer.node.args = tuple(args)
    layer.bias_attr = bias_attr
    gm.recompile()
    return bias_attr
