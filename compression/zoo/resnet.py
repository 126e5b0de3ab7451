from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut, as in He et al. 2016."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        # Two ReLU modules, not one used twice: quantizers group nodes by the module that produced them, and a
        # shared module would make one "partition" with two outputs (torchao's x86 quantizer refuses that).
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet: a 3x3 stem, three stages (x1, x2, x4 channels; stride 2 between), global pooling."""

    def __init__(self, in_channels: int, num_classes: int, width: int, blocks_per_stage: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        stages, channels = [], width
        for stage, multiplier in enumerate((1, 2, 4)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                stages.append(BasicBlock(channels, width * multiplier, stride))
                channels = width * multiplier
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


def resnet(in_channels: int = 1, num_classes: int = 10, width_mult: float = 1.0, depth_mult: float = 1.0,
           base_width: int = 16, base_blocks: int = 2) -> ResNet:
    """ResNet for 28x28 or 32x32 inputs (any size works: pooling is global). Defaults give ResNet-14 with
    16/32/64 channels; `width_mult`/`depth_mult` scale channels and blocks per stage (e.g. for students)."""
    width = max(1, round(base_width * width_mult))
    blocks = max(1, round(base_blocks * depth_mult))
    return ResNet(in_channels, num_classes, width, blocks)
