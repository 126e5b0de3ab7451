from __future__ import annotations

from torch import nn


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU()]


def small_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 16,
              hidden: int = 64, dropout: float = 0.0) -> nn.Sequential:
    """Two conv-BN-ReLU blocks (width, 2*width channels) with 2x2 max pooling, then a two-layer classifier.

    Images of 16 pixels or more are pooled after both blocks (28 -> 7, 32 -> 8), smaller ones after the first
    only (8 -> 4), so 8x8 digits keep enough resolution.
    """
    pools = 2 if image_size >= 16 else 1
    layers: list[nn.Module] = [*conv_bn_relu(in_channels, width), nn.MaxPool2d(2),
                               *conv_bn_relu(width, 2 * width)]
    if pools == 2:
        layers.append(nn.MaxPool2d(2))
    side = image_size // 2 ** pools
    layers += [nn.Flatten(), nn.Linear(2 * width * side * side, hidden), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(hidden, num_classes))
    return nn.Sequential(*layers)
