"""The pieces every small CNN family of the sweep is built from (bench/cnn_families.py, bench/cnn_more_families.py):
input shapes, class count, conv-BN-activation and the classifier frame."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

IMAGE = (3, 16, 16)
AUDIO_SAMPLES = 256
CLASSES = 10


def conv_bn(cin: int, cout: int, kernel=3, stride=1, groups=1, dilation=1, act: type[nn.Module] = nn.ReLU):
    padding = tuple((k - 1) // 2 * dilation for k in ((kernel, kernel) if isinstance(kernel, int) else kernel))
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), act())


class Classifier(nn.Module):
    """stem -> body -> global average pool -> linear: the frame every ImageNet family shares."""

    def __init__(self, body: nn.Module, width: int, stem_width: int = 8):
        super().__init__()
        self.stem = conv_bn(IMAGE[0], stem_width)
        self.body = body
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.body(self.stem(x)), 1).flatten(1))
