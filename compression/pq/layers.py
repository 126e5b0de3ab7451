"""Which weights can be product-quantized, and how a weight is cut into blocks.

A weight of shape (out, ...) is viewed as `out` rows of length prod(shape[1:]); each row is cut into consecutive
blocks of `block_size`. For a linear layer a block is `block_size` neighbouring input features; for a 1x1 conv,
neighbouring input channels; for a k x k conv with block size k*k, exactly one kernel (the paper's choice); for an
embedding (num, dim), neighbouring dimensions of one entry. Blocks are numbered row-major: block b covers
row b // (row_length / block_size), columns (b % blocks_per_row) * block_size onwards.

Layers are found in exported programs (`aten.linear/conv*/embedding` nodes whose weight is a `get_attr`) and in
plain modules (`nn.Linear`, `nn.Conv*d`, `nn.Embedding`) alike, and named by the weight's qualified name
("layer1.0.conv1.weight").
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from compression.modes import is_exported

WEIGHT_ARGUMENT = {  # aten op -> position of its weight argument
    torch.ops.aten.linear.default: 1,
    torch.ops.aten.conv1d.default: 1,
    torch.ops.aten.conv2d.default: 1,
    torch.ops.aten.conv3d.default: 1,
    torch.ops.aten.embedding.default: 0,
}


@dataclass(frozen=True)
class LayerWeight:
    name: str  # qualified parameter name, e.g. "layer1.0.conv1.weight"
    kind: str  # "linear", "conv1x1", "conv" (kernel larger than 1x1) or "embedding"
    shape: tuple[int, ...]

    @property
    def owner(self) -> str:
        return self.name.rpartition(".")[0]

    @property
    def attribute(self) -> str:
        return self.name.rpartition(".")[2]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _kind(op_or_module, shape: tuple[int, ...]) -> str:
    if op_or_module in (torch.ops.aten.embedding.default,) or isinstance(op_or_module, nn.Embedding):
        return "embedding"
    if op_or_module in (torch.ops.aten.linear.default,) or isinstance(op_or_module, nn.Linear):
        return "linear"
    return "conv1x1" if math.prod(shape[2:]) == 1 else "conv"


def find_layer_weights(model: nn.Module) -> list[LayerWeight]:
    """The linear, conv and embedding weights of `model`, in the order the forward pass uses them."""
    parameters = dict(model.named_parameters())
    found: dict[str, LayerWeight] = {}
    if is_exported(model) or isinstance(model, torch.fx.GraphModule):
        for node in model.graph.nodes:
            position = WEIGHT_ARGUMENT.get(node.target) if node.op == "call_function" else None
            if position is None or len(node.args) <= position:
                continue
            weight = node.args[position]
            if isinstance(weight, torch.fx.Node) and weight.op == "get_attr" and weight.target in parameters:
                shape = tuple(parameters[weight.target].shape)
                found.setdefault(weight.target, LayerWeight(weight.target, _kind(node.target, shape), shape))
        return list(found.values())
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Embedding)):
            name = f"{module_name}.weight" if module_name else "weight"
            shape = tuple(module.weight.shape)
            found.setdefault(name, LayerWeight(name, _kind(module, shape), shape))
    return list(found.values())


def select(layers: list[LayerWeight], include: list[str], exclude: list[str]) -> list[LayerWeight]:
    return [layer for layer in layers if any(fnmatch.fnmatchcase(layer.name, pattern) for pattern in include)
            and not any(fnmatch.fnmatchcase(layer.name, pattern) for pattern in exclude)]


def block_size_for(layer: LayerWeight, block_sizes) -> int:
    """Block size of a layer from a `BlockSizes` spec (a whole kernel for k x k convs unless configured)."""
    if layer.kind == "conv":
        return block_sizes.conv or math.prod(layer.shape[2:])
    return getattr(block_sizes, layer.kind)


def row_length(shape: tuple[int, ...]) -> int:
    return math.prod(shape[1:])


def can_split(shape: tuple[int, ...], block_size: int) -> bool:
    return row_length(shape) % block_size == 0


def to_blocks(weight: Tensor, block_size: int) -> Tensor:
    """(out, ...) -> (out * row_length / block_size, block_size); a view when the weight is contiguous."""
    return weight.reshape(-1, block_size)


def from_blocks(blocks: Tensor, shape: tuple[int, ...]) -> Tensor:
    return blocks.reshape(shape)


def get_parameter(model: nn.Module, name: str) -> Tensor:
    owner, _, attribute = name.rpartition(".")
    return getattr(model.get_submodule(owner), attribute)


def owner_module(model: nn.Module, layer: LayerWeight) -> nn.Module:
    return model.get_submodule(layer.owner)
