"""Which weights can be product-quantized, and how a weight is cut into blocks.

A weight of shape (out, ...) is viewed as `out` rows of length prod(shape[1:]); each row is cut into consecutive
blocks of `block_size`. For a linear layer a block is `block_size` neighbouring input features; for a 1x1 conv,
neighbouring input channels; for a small conv kernel (at most 9 weights: 3x3, 1x3, 5) exactly one kernel (the
paper's choice); for a long or non-square kernel (a (512, 1) audio kernel, 7x7) a run of about 4 neighbouring taps
of one kernel (`block_size_for`), because one codeword for a whole 512-tap kernel cannot represent it; for an embedding (num, dim),
neighbouring dimensions of one entry. The block size is always a divisor of the row length (the configured size,
or the largest divisor below it), so no layer is left out because its width is odd. Blocks are numbered
row-major: block b covers row b // (row_length / block_size), columns (b % blocks_per_row) * block_size onwards.

Layers are found in exported programs (`aten.linear/conv*/embedding` nodes whose weight is a `get_attr`) and in
plain modules (`nn.Linear`, `nn.Conv*d`, `nn.Embedding`) alike, and named by the weight's qualified name
("layer1.0.conv1.weight"). In exported programs the q/k/v/output projections of attention (found as for head
pruning) are their own kind, "attention", with smaller blocks (4, as fairseq's iPQ uses for RoBERTa), and the other
linear layers of such a transformer (feed-forward in/out, pooler) are kind "ffn", also with blocks of 4: at 8 (one
bit per weight) their error alone took a pretrained 12-layer BERT's [CLS] cosine to fp32 down to 0.6 (issue 10).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from compression.modes import is_exported
from compression.prune.attention_heads import find_head_groups

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
    kind: str  # "linear", "attention", "ffn", "conv1x1", "conv" (kernel larger than 1x1) or "embedding"
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
        attention = {piece.name for group in find_head_groups(model) for piece in group.slices}
        for node in model.graph.nodes:
            position = WEIGHT_ARGUMENT.get(node.target) if node.op == "call_function" else None
            if position is None or len(node.args) <= position:
                continue
            weight = node.args[position]
            if isinstance(weight, torch.fx.Node) and weight.op == "get_attr" and weight.target in parameters:
                shape = tuple(parameters[weight.target].shape)
                kind = "attention" if weight.target in attention else _kind(node.target, shape)
                if kind == "linear" and attention:
                    kind = "ffn"
                found.setdefault(weight.target, LayerWeight(weight.target, kind, shape))
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


WHOLE_KERNEL_MAX = 9  # kernels up to 3x3 are one block each
# Longer kernels are cut into runs of about 4 taps (2 bits a weight with 256 centroids): the divisor of the
# kernel's length in 2..8 nearest to 4, so (512, 1) -> 4, 5x5 -> 5, 7x7 -> 7. Runs of 8 (1 bit a weight) cost
# CREPE tiny 5.8 % of its pitch accuracy after iPQ + int8 (18.6x smaller); runs of 4 kept it (+0.6 %, 12.3x).
LONG_KERNEL_TAPS = 4
LONG_KERNEL_RUNS = range(2, 9)


def block_size_for(layer: LayerWeight, block_sizes) -> int:
    """Block size of a layer from a `BlockSizes` spec and the layer's shape: the configured size for its kind (a
    whole small kernel, runs of a long kernel's taps, for convs left unconfigured), lowered to the largest
    divisor of the row length that does not exceed it."""
    if layer.kind == "conv" and not block_sizes.conv:
        kernel = math.prod(layer.shape[2:])
        if kernel <= WHOLE_KERNEL_MAX:
            return kernel
        runs = [taps for taps in LONG_KERNEL_RUNS if kernel % taps == 0]
        if runs:
            return min(runs, key=lambda taps: (abs(taps - LONG_KERNEL_TAPS), -taps))
        target = LONG_KERNEL_TAPS  # a kernel length with no divisor in 2..8 (a prime): blocks run across kernels
    else:
        target = block_sizes.conv if layer.kind == "conv" else getattr(block_sizes, layer.kind)
    return _largest_divisor(row_length(layer.shape), target)


def _largest_divisor(length: int, at_most: int) -> int:
    return next(size for size in range(min(at_most, length), 0, -1) if length % size == 0)


def row_length(shape: tuple[int, ...]) -> int:
    return math.prod(shape[1:])


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
