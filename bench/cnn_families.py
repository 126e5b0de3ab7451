"""Small CNNs shaped like the real families users upload (built here at toy width, random init, never downloaded):
the layer patterns each family's pretrained checkpoints are made of, for `bench.cnn_shape_sweep` and the tests.

Each case is a module plus example inputs; `export_case` exports it the way a user would (`torch.export.export`
with a dynamic batch, BatchNorm running statistics randomised so that folding them is not a no-op).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.cnn_blocks import AUDIO_SAMPLES, CLASSES, IMAGE, Classifier, conv_bn
from bench.cnn_more_families import VIDEO, VideoR2Plus1d, more_image_cases
from bench.layer_form_cases import LAYER_FORM_SEQUENCE_CASES, TOKENS, layer_form_image_cases


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1):
        super().__init__()
        self.reduce = conv_bn(cin, mid, 1)
        self.conv = conv_bn(mid, mid, 3, stride)
        self.expand = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.downsample = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.expand(self.conv(self.reduce(x))) + identity)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int, gate: type[nn.Module], act: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.act = act()
        self.expand = nn.Conv2d(squeezed, channels, 1)
        self.gate = gate()

    def forward(self, x):
        return x * self.gate(self.expand(self.act(self.reduce(F.adaptive_avg_pool2d(x, 1)))))


class InvertedResidual(nn.Module):
    """MobileNetV2 (ReLU6, no SE), MobileNetV3 (hardswish, SE with hardsigmoid) and EfficientNet MBConv (SiLU, SE
    with sigmoid) are this block with different activations and gates."""

    def __init__(self, cin: int, cout: int, expand: int, stride: int = 1, kernel: int = 3,
                 act: type[nn.Module] = nn.ReLU6, se_gate: type[nn.Module] | None = None):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1, act=act)] if expand != 1 else []
        layers.append(conv_bn(hidden, hidden, kernel, stride, groups=hidden, act=act))
        if se_gate is not None:
            layers.append(SqueezeExcite(hidden, max(hidden // 4, 2), se_gate,
                                        nn.SiLU if act is nn.SiLU else nn.ReLU))
        layers += [nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return x + out if self.residual else out


class DenseBlock(nn.Module):
    """DenseNet: every layer sees the concatenation of all earlier outputs; a transition halves the channels."""

    def __init__(self, cin: int, growth: int = 4, layers: int = 3):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(nn.BatchNorm2d(cin + i * growth), nn.ReLU(),
                          nn.Conv2d(cin + i * growth, 2 * growth, 1, bias=False),
                          nn.BatchNorm2d(2 * growth), nn.ReLU(), nn.Conv2d(2 * growth, growth, 3, 1, 1, bias=False))
            for i in range(layers))
        total = cin + layers * growth
        self.transition = nn.Sequential(nn.BatchNorm2d(total), nn.ReLU(), nn.Conv2d(total, total // 2, 1, bias=False),
                                        nn.AvgPool2d(2))
        self.out_channels = total // 2

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(torch.cat(features, 1)))
        return self.transition(torch.cat(features, 1))


class UNet(nn.Module):
    """Encoder/decoder with skip concatenations: one level up by ConvTranspose2d, one by bilinear upsampling; a
    dense per-pixel output (2 classes per pixel)."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.enc1 = nn.Sequential(conv_bn(IMAGE[0], width), conv_bn(width, width))
        self.enc2 = nn.Sequential(conv_bn(width, 2 * width), conv_bn(2 * width, 2 * width))
        self.bottom = nn.Sequential(conv_bn(2 * width, 4 * width), conv_bn(4 * width, 4 * width))
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, 2)
        self.dec2 = conv_bn(4 * width, 2 * width)
        self.reduce1 = nn.Conv2d(2 * width, width, 1)
        self.dec1 = conv_bn(2 * width, width)
        self.out = nn.Conv2d(width, 2, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        bottom = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(bottom), e2], 1))
        up1 = F.interpolate(self.reduce1(d2), scale_factor=2, mode="bilinear", align_corners=False)
        return self.out(self.dec1(torch.cat([up1, e1], 1)))


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        out = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        out = self.gamma * self.pwconv2(F.gelu(self.pwconv1(out)))
        return x + out.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(IMAGE[0], dim, 4, 4)
        self.stem_norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, x):
        x = self.stem_norm(self.stem(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(self.norm(self.blocks(x).mean((-2, -1))))


class TextCNN(nn.Module):
    """Kim-style text classifier: token ids -> embedding -> Conv1d over time (two kernel sizes) -> max over time."""

    def __init__(self, vocab: int = 50, dim: int = 16, width: int = 16):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.conv3 = nn.Conv1d(dim, width, 3, padding=1)
        self.conv5 = nn.Conv1d(dim, width, 5, padding=2)
        self.norm = nn.BatchNorm1d(2 * width)
        self.head = nn.Linear(2 * width, 4)

    def forward(self, ids):
        x = self.embedding(ids).transpose(1, 2)
        x = F.relu(self.norm(torch.cat([self.conv3(x), self.conv5(x)], 1)))
        return self.head(x.amax(-1))


class TallAudio(nn.Module):
    """CREPE's layout: 1-D convolutions written as (k, 1) Conv2d over [N, C, time, 1], a time-axis `F.pad` before
    each, BatchNorm and max-pooling over time. Prune stages and distilled students write such convs on their side
    (`compression.ptq.conv_orientation`)."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.first, self.norm1 = nn.Conv2d(1, width, (32, 1), stride=(4, 1)), nn.BatchNorm2d(width)
        self.second, self.norm2 = nn.Conv2d(width, width, (8, 1)), nn.BatchNorm2d(width)
        self.head = nn.Linear(width * 8, CLASSES)

    def forward(self, audio):
        x = audio[:, None, :, None]  # [N, 1, 256, 1]
        x = F.max_pool2d(F.relu(self.norm1(self.first(F.pad(x, (0, 0, 14, 14))))), (2, 1))  # 32 steps
        x = F.max_pool2d(F.relu(self.norm2(self.second(F.pad(x, (0, 0, 3, 4))))), (4, 1))  # 8 steps
        return self.head(x.flatten(1))


class TwoHeads(nn.Module):
    """A shared trunk with two outputs (class logits and a box regression), returned as a tuple."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.trunk = nn.Sequential(conv_bn(IMAGE[0], width, stride=2), conv_bn(width, width))
        self.classes = nn.Linear(width, CLASSES)
        self.boxes = nn.Linear(width, 4)

    def forward(self, x):
        features = F.adaptive_avg_pool2d(self.trunk(x), 1).flatten(1)
        return self.classes(features), self.boxes(features)


class UnusedBranch(nn.Module):
    """A checkpoint that carries an auxiliary head (Inception's aux logits) the exported forward never calls."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(conv_bn(IMAGE[0], width), conv_bn(width, width, stride=2))
        self.aux = nn.Sequential(conv_bn(width, width), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 3))
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x):
        return self.head(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


class AdaptivePool(nn.Module):
    """VGG/AlexNet style: adaptive pooling to a 3x3 grid, flattened into the classifier (channels x positions)."""

    def __init__(self, width: int = 12):
        super().__init__()
        self.features = nn.Sequential(conv_bn(IMAGE[0], width), nn.MaxPool2d(2), conv_bn(width, width))
        self.pool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(nn.Linear(width * 9, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _image_cases() -> dict[str, Callable[[], nn.Module]]:
    return {
        "resnet_basic": lambda: Classifier(nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, 2)), 16),
        "resnet_bottleneck": lambda: Classifier(nn.Sequential(Bottleneck(8, 4, 16), Bottleneck(16, 4, 16),
                                                              Bottleneck(16, 8, 32, 2)), 32),
        "mobilenet_v2": lambda: Classifier(nn.Sequential(InvertedResidual(8, 8, 1), InvertedResidual(8, 12, 4, 2),
                                                         InvertedResidual(12, 12, 4)), 12),
        "mobilenet_v3": lambda: Classifier(nn.Sequential(
            InvertedResidual(8, 8, 1, act=nn.Hardswish, se_gate=nn.Hardsigmoid),
            InvertedResidual(8, 16, 3, 2, kernel=5, act=nn.Hardswish, se_gate=nn.Hardsigmoid),
            InvertedResidual(16, 16, 3, act=nn.Hardswish, se_gate=nn.Hardsigmoid)), 16),
        "efficientnet_mbconv": lambda: Classifier(nn.Sequential(
            InvertedResidual(8, 8, 1, act=nn.SiLU, se_gate=nn.Sigmoid),
            InvertedResidual(8, 16, 6, 2, act=nn.SiLU, se_gate=nn.Sigmoid),
            InvertedResidual(16, 16, 6, kernel=5, act=nn.SiLU, se_gate=nn.Sigmoid)), 16),
        "densenet": lambda: Classifier(DenseBlock(8), DenseBlock(8).out_channels),
        "unet": UNet,
        "convnext": ConvNeXt,
        "dilated_grouped": lambda: Classifier(nn.Sequential(
            conv_bn(8, 16, dilation=2), conv_bn(16, 16, groups=4), conv_bn(16, 16, dilation=3, groups=2)), 16),
        "nonsquare_kernels": lambda: Classifier(nn.Sequential(
            conv_bn(8, 12, (1, 7)), conv_bn(12, 12, (7, 1)), conv_bn(12, 16, (3, 5), stride=(2, 1))), 16),
        "groupnorm": lambda: Classifier(nn.Sequential(
            nn.Conv2d(8, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, 2, 1), nn.GroupNorm(4, 16), nn.ReLU()), 16),
        "two_heads": TwoHeads,
        "unused_branch": UnusedBranch,
        "adaptive_pool_3x3": AdaptivePool,
        "bounded_batch": lambda: Classifier(nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 16, 2)), 16),
        **more_image_cases(),
        **layer_form_image_cases(),
    }


@dataclass
class CnnCase:
    name: str
    model: nn.Module
    inputs: np.ndarray  # every example the dataset holds (train then val)
    max_batch: int | None = None  # the export's bound on the batch, when it has one


def build_case(name: str, samples: int = 96, seed: int = 0) -> CnnCase:
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    if name == "text_conv1d":
        model, inputs = TextCNN(), generator.integers(0, 50, (samples, 24)).astype(np.int64)
    elif name == "tall_audio":
        model, inputs = TallAudio(), generator.standard_normal((samples, AUDIO_SAMPLES)).astype(np.float32)
    elif name == "video_conv3d":
        model, inputs = VideoR2Plus1d(), generator.standard_normal((samples, *VIDEO)).astype(np.float32)
    elif name in LAYER_FORM_SEQUENCE_CASES:
        build, kind = LAYER_FORM_SEQUENCE_CASES[name]
        model = build()
        inputs = (generator.integers(0, TOKENS[1], (samples, TOKENS[0])).astype(np.int64) if kind == "tokens"
                  else generator.standard_normal((samples, AUDIO_SAMPLES)).astype(np.float32))
    else:
        model = _image_cases()[name]()
        inputs = generator.standard_normal((samples, *IMAGE)).astype(np.float32)
    randomize_batch_norm(model, seed)
    return CnnCase(name, teach(model.eval(), inputs, seed=seed), inputs, 64 if name == "bounded_batch" else None)


CASE_NAMES = (*_image_cases(), "text_conv1d", "tall_audio", "video_conv3d", *LAYER_FORM_SEQUENCE_CASES)


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine parameters away from (0, 1): pretrained ones are, and folding must use them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                size = module.num_features
                module.running_mean.copy_(torch.rand(size, generator=generator) * 0.4 - 0.2)
                module.running_var.copy_(torch.rand(size, generator=generator) * 0.5 + 0.75)
                module.weight.copy_(torch.rand(size, generator=generator) * 0.5 + 0.75)
                module.bias.copy_(torch.rand(size, generator=generator) * 0.2 - 0.1)


def export_case(case: CnnCase, directory: Path, dtype: torch.dtype = torch.float32,
                decomposed: bool = False) -> tuple[Path, Path]:
    """The upload (`.pt2`, exported like a user does; `decomposed`: then lowered to core ATen with
    `run_decompositions()`, as for ExecuTorch) and its dataset. A classifier's labels are its own top-1
    predictions (accuracy is then agreement with the upload, 100 before compression); a dense output has none
    (the metric is fidelity to the upload). `dtype`: what the model's weights and float inputs are stored in
    (`case.model` is cast in place); the dataset stays float32, which the job casts to what the model takes."""
    from compression.io import save_program

    batch = torch.export.Dim("batch", min=1, max=case.max_batch) if case.max_batch else torch.export.Dim("batch")
    case.model.to(dtype)
    example = _as_model_input(torch.from_numpy(case.inputs[:4]), dtype)
    program = torch.export.export(case.model, (example,), dynamic_shapes=({0: batch},))
    if decomposed:
        program = program.run_decompositions()
    model_path = save_program(program, directory / f"{case.name}.pt2")
    half = len(case.inputs) * 2 // 3
    dataset_path = directory / f"{case.name}.npz"
    arrays = {"train.x": case.inputs[:half], "val.x": case.inputs[half:]}
    with torch.no_grad():
        outputs = case.model(_as_model_input(torch.from_numpy(case.inputs), dtype))
    first = outputs[0] if isinstance(outputs, tuple) else outputs
    if first.dim() == 2:
        labels = first.argmax(1).numpy()
        arrays |= {"train.y": labels[:half], "val.y": labels[half:]}
    np.savez(dataset_path, **arrays)
    return model_path, dataset_path


def _as_model_input(inputs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return inputs.to(dtype) if inputs.is_floating_point() else inputs  # token ids stay integers


def teach(model: nn.Module, inputs: np.ndarray, steps: int = 60, seed: int = 0) -> nn.Module:
    """Fit the model for a few steps to a smooth function of its input (a fixed random projection of the pooled
    image or audio frame, or of the token counts), so that its outputs depend on the input with real margins, as a
    pretrained model's do; a randomly initialised net predicts nearly one class with near-tied logits, and every
    lossy method would look like a collapse on it. BatchNorm trains too, so its running statistics (randomised
    before) end near the data's like a pretrained model's: statistics far from the data's would move at a stage's
    first training steps and make every method that trains look broken."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(inputs)
    if x.dtype == torch.int64:
        features = F.one_hot(x, 50).float().mean(1)
    elif x.dim() == 2:  # audio frames
        features = F.adaptive_avg_pool1d(x[:, None], 16).flatten(1)
    elif x.dim() == 5:  # video clips
        features = F.adaptive_avg_pool3d(x, (1, 4, 4)).flatten(1)
    else:
        features = F.adaptive_avg_pool2d(x, 4).flatten(1)
    features = (features - features.mean(0)) / (features.std(0) + 1e-6)
    with torch.no_grad():
        outputs = model(x)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    targets = tuple(
        (features @ torch.randn(features.shape[1], out[0].numel(), generator=generator) / features.shape[1] ** 0.5
         * 3).reshape(out.shape) for out in outputs)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        predictions = model(x)
        predictions = predictions if isinstance(predictions, tuple) else (predictions,)
        loss = sum(F.mse_loss(p, t) for p, t in zip(predictions, targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()
