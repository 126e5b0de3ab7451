from __future__ import annotations

import math

from torch import nn


def mlp(input_shape: tuple[int, ...] | int = (1, 28, 28), num_classes: int = 10,
        hidden: tuple[int, ...] = (256, 128), dropout: float = 0.0) -> nn.Sequential:
    """Flatten, then Linear-ReLU(-Dropout) per hidden width, then a Linear classifier."""
    in_features = input_shape if isinstance(input_shape, int) else math.prod(input_shape)
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)
