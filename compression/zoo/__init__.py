"""Small built-in architectures: test models, the demo's model, and students derived for distillation.

`build(name, **kwargs)` returns a freshly initialised `nn.Module` in eval mode. Every architecture exports with
`compression.io.export_model` (dynamic batch) and uses only ops that torchao's x86 int8 lowering understands
(conv/linear, batch norm, ReLU, pooling, add).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from compression.zoo.cnn import small_cnn
from compression.zoo.mlp import mlp
from compression.zoo.resnet import resnet
from compression.zoo.transformer import tiny_transformer

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "small_cnn": small_cnn,
    "resnet": resnet,
    "tiny_transformer": tiny_transformer,
}


def build(name: str, **kwargs) -> nn.Module:
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture '{name}'; known: {sorted(ARCHITECTURES)}") from None
    return factory(**kwargs).eval()


__all__ = ["ARCHITECTURES", "build", "mlp", "small_cnn", "resnet", "tiny_transformer"]
