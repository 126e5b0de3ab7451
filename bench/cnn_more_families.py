"""More CNN families users upload, at toy width (bench/cnn_families.py has the first ones and the registry): the
ops each one adds to what the sweep covers.

- shufflenet: ShuffleNetV2 units (channel split, concat, and the channel shuffle's view/transpose/reshape);
- squeezenet: fire modules (squeeze, two expand branches concatenated) and a convolutional classifier (no Linear);
- video_conv3d: R(2+1)D video blocks, Conv3d (1,3,3) then (3,1,1) with BatchNorm3d, on [N, 3, frames, H, W];
- crnn_gru: an OCR/speech CRNN, convolutions then a bidirectional GRU over the width, logits per time step;
- pixel_shuffle_sr: ESPCN super-resolution, convolutions into PixelShuffle, an image twice the size out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.cnn_blocks import CLASSES, IMAGE, Classifier, conv_bn

VIDEO = (3, 4, 16, 16)  # channels, frames, height, width


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch, channels, height, width = x.shape
    return x.view(batch, groups, channels // groups, height, width).transpose(1, 2).reshape(
        batch, channels, height, width)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: stride 1 keeps half the channels and transforms the other half; stride 2 transforms
    both halves of a copy; the two are concatenated and shuffled."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        half = cout // 2
        branch_in = cin if stride == 2 else cin // 2
        self.branch = nn.Sequential(conv_bn(branch_in, half, 1), conv_bn(half, half, 3, stride, groups=half,
                                                                            act=nn.Identity), conv_bn(half, half, 1))
        self.shortcut = (nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin, act=nn.Identity), conv_bn(cin, half, 1))
                         if stride == 2 else None)

    def forward(self, x):
        if self.shortcut is None:
            kept, transformed = x.chunk(2, dim=1)
            out = torch.cat([kept, self.branch(transformed)], 1)
        else:
            out = torch.cat([self.shortcut(x), self.branch(x)], 1)
        return channel_shuffle(out, 2)


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1(x)), F.relu(self.expand3(x))], 1)


class SqueezeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(IMAGE[0], 16, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      Fire(16, 4, 8), Fire(16, 4, 8), Fire(16, 8, 16))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(32, CLASSES, 1), nn.ReLU(),
                                        nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class Conv2Plus1d(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        mid = (cin + cout) // 2
        super().__init__(nn.Conv3d(cin, mid, (1, 3, 3), (1, stride, stride), (0, 1, 1), bias=False),
                         nn.BatchNorm3d(mid), nn.ReLU(),
                         nn.Conv3d(mid, cout, (3, 1, 1), (stride, 1, 1), (1, 0, 0), bias=False),
                         nn.BatchNorm3d(cout), nn.ReLU())


class VideoR2Plus1d(nn.Module):
    def __init__(self, width: int = 12):
        super().__init__()
        self.stem = Conv2Plus1d(VIDEO[0], width)
        self.block = Conv2Plus1d(width, width)
        self.down = Conv2Plus1d(width, 2 * width, stride=2)
        self.head = nn.Linear(2 * width, CLASSES)

    def forward(self, clip):
        x = self.stem(clip)
        x = self.down(x + self.block(x))
        return self.head(F.adaptive_avg_pool3d(x, 1).flatten(1))


class CrnnGru(nn.Module):
    """Text-line recognition's layout: a convolutional trunk, the height averaged away, a bidirectional GRU over
    the width, per-step character logits [N, steps, classes] (what CTC decodes)."""

    def __init__(self, width: int = 16, hidden: int = 16):
        super().__init__()
        self.trunk = nn.Sequential(conv_bn(IMAGE[0], width), nn.MaxPool2d((2, 1)), conv_bn(width, width),
                                   nn.MaxPool2d((2, 1)))
        self.rnn = nn.GRU(width, hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, CLASSES)

    def forward(self, x):
        steps = self.trunk(x).mean(2).transpose(1, 2)  # [N, W, C]
        return self.head(self.rnn(steps)[0])


class PixelShuffleSR(nn.Module):
    def __init__(self, scale: int = 2, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(IMAGE[0], width, 5, padding=2), nn.Tanh(),
                                  nn.Conv2d(width, width // 2, 3, padding=1), nn.Tanh(),
                                  nn.Conv2d(width // 2, IMAGE[0] * scale * scale, 3, padding=1))
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x):
        return self.shuffle(self.body(x))


def more_image_cases() -> dict:
    return {
        "shufflenet": lambda: Classifier(nn.Sequential(ShuffleUnit(8, 16, 2), ShuffleUnit(16, 16),
                                                       ShuffleUnit(16, 32, 2)), 32),
        "squeezenet": SqueezeNet,
        "crnn_gru": CrnnGru,
        "pixel_shuffle_sr": PixelShuffleSR,
    }
