"""Layer forms real checkpoints carry that the CNN families in `bench.cnn_families` do not: weights computed in
the graph by a parametrization (weight norm in WaveNet/HiFi-GAN-style vocoders and TCNs, spectral norm in GAN
discriminators), weights standardized at every call (timm's `StdConv2d` in BiT/ResNetV2, `ScaledStdConv2d` with a
gain in NFNets), instance normalization (style transfer), an LSTM over token embeddings, a ViT built from
`nn.TransformerEncoderLayer` with a class token and a learned position table, Swin's shifted windows
(`torch.roll`, window partition reshapes) and DETR's object queries decoded against a conv feature map
(`nn.TransformerDecoder`: cross-attention), QuartzNet's time-channel separable Conv1d and a recommender's
`EmbeddingBag`. Toy widths, random init, never downloaded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

from bench.cnn_blocks import CLASSES, IMAGE, Classifier

TOKENS = (24, 50)  # sequence length, vocabulary


class WeightNormTcn(nn.Module):
    """Causal dilated Conv1d stack (left-only `F.pad`), every conv under `parametrizations.weight_norm`, residual
    adds, then global average pooling over time."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = parametrizations.weight_norm(nn.Conv1d(1, width, 8, stride=4))
        self.blocks = nn.ModuleList(parametrizations.weight_norm(nn.Conv1d(width, width, 3, dilation=d))
                                    for d in (1, 2, 4))
        self.head = nn.Linear(width, CLASSES)

    def forward(self, audio):
        x = F.leaky_relu(self.stem(audio[:, None, :]), 0.1)
        for block, dilation in zip(self.blocks, (1, 2, 4)):
            x = x + F.leaky_relu(block(F.pad(x, (2 * dilation, 0))), 0.1)
        return self.head(x.mean(-1))


class SpectralNormDiscriminator(nn.Module):
    """A GAN discriminator's trunk: strided convs under `parametrizations.spectral_norm`, LeakyReLU, no norm layer."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.convs = nn.ModuleList([
            parametrizations.spectral_norm(nn.Conv2d(IMAGE[0], width, 4, 2, 1)),
            parametrizations.spectral_norm(nn.Conv2d(width, 2 * width, 4, 2, 1)),
        ])
        self.head = parametrizations.spectral_norm(nn.Linear(2 * width * 16, CLASSES))

    def forward(self, image):
        x = image
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return self.head(x.flatten(1))


class StdConv2d(nn.Conv2d):
    """timm's weight-standardized conv (BiT, ResNetV2): each filter normalized to zero mean and unit variance by a
    batch norm over the weight itself, at every call."""

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None, training=True,
                              momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ScaledStdConv2d(nn.Conv2d):
    """timm's NFNet conv: the standardized filter times a learned per-filter gain (a second parameter)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)
        self.scale = self.weight[0].numel() ** -0.5

    def forward(self, x):
        weight = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                              weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0,
                              eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def standardized_convs() -> nn.Module:
    return Classifier(nn.Sequential(
        StdConv2d(8, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
        ScaledStdConv2d(16, 16, 3, 2, 1), nn.ReLU(), ScaledStdConv2d(16, 16, 3, padding=1), nn.ReLU()), 16)


class StyleTransfer(nn.Module):
    """Johnson-style image-to-image net: convs with `InstanceNorm2d(affine=True)`, a strided conv down, a residual
    block, nearest upsampling and a conv back to an image in [-1, 1] (a dense output: the job's metric is fidelity
    to the upload)."""

    def __init__(self, width: int = 16):
        super().__init__()

        def conv_in(cin, cout, stride=1):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.InstanceNorm2d(cout, affine=True), nn.ReLU())

        self.down = nn.Sequential(conv_in(IMAGE[0], width), conv_in(width, 2 * width, 2))
        self.residual = nn.Sequential(conv_in(2 * width, 2 * width), nn.Conv2d(2 * width, 2 * width, 3, 1, 1),
                                      nn.InstanceNorm2d(2 * width, affine=True))
        self.up = conv_in(2 * width, width)
        self.out = nn.Conv2d(width, IMAGE[0], 3, 1, 1)

    def forward(self, image):
        x = self.down(image)
        x = x + self.residual(x)
        x = self.up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return torch.tanh(self.out(x))


class LstmText(nn.Module):
    """Token ids -> embedding -> two-layer bidirectional LSTM -> the last step's features -> logits."""

    def __init__(self, dim: int = 16, hidden: int = 16):
        super().__init__()
        self.embedding = nn.Embedding(TOKENS[1], dim)
        self.rnn = nn.LSTM(dim, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, 4)

    def forward(self, ids):
        return self.head(self.rnn(self.embedding(ids))[0][:, -1])


class TinyVit(nn.Module):
    """Patch embedding conv, a class token and a learned position table (parameters the root module holds), two
    `nn.TransformerEncoderLayer`s (pre-norm, GELU), the class token's features -> logits."""

    def __init__(self, dim: int = 32, patch: int = 4):
        super().__init__()
        self.patch = nn.Conv2d(IMAGE[0], dim, patch, patch)
        patches = (IMAGE[1] // patch) * (IMAGE[2] // patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.position = nn.Parameter(torch.randn(1, patches + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, image):
        tokens = self.patch(image).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], 1) + self.position
        return self.head(self.norm(self.encoder(tokens))[:, 0])


class ShiftedWindowBlock(nn.Module):
    """Swin's block: LayerNorm, attention inside 4x4 windows of a cyclically shifted map (`torch.roll`), the
    windows put back, then an MLP; channels-last [N, H, W, C] throughout."""

    def __init__(self, dim: int, window: int = 4, shift: int = 2, heads: int = 2):
        super().__init__()
        self.window, self.shift, self.heads = window, shift, heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        n, h, w, c = x.shape
        size = self.window
        shifted = torch.roll(self.norm1(x), (-self.shift, -self.shift), (1, 2))
        windows = shifted.view(n, h // size, size, w // size, size, c).permute(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(-1, size * size, c)
        q, k, v = self.qkv(windows).view(-1, size * size, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(-1, size * size, c)
        attended = self.proj(attended).view(n, h // size, w // size, size, size, c).permute(0, 1, 3, 2, 4, 5)
        x = x + torch.roll(attended.reshape(n, h, w, c), (self.shift, self.shift), (1, 2))
        return x + self.mlp(self.norm2(x))


class TinySwin(nn.Module):
    def __init__(self, dim: int = 16):
        super().__init__()
        self.patch = nn.Conv2d(IMAGE[0], dim, 2, 2)
        self.blocks = nn.Sequential(ShiftedWindowBlock(dim, shift=0), ShiftedWindowBlock(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, image):
        x = self.blocks(self.patch(image).permute(0, 2, 3, 1))
        return self.head(self.norm(x).mean((1, 2)))


class QueryDecoder(nn.Module):
    """DETR's layout: a conv backbone's feature map as the memory, learned object queries (a parameter of the root
    module) through an `nn.TransformerDecoder` (self-attention over the queries, cross-attention into the
    memory, whose packed projection MultiheadAttention splits at every call), class logits averaged over the
    queries."""

    def __init__(self, dim: int = 32, queries: int = 4):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(IMAGE[0], dim, 3, 2, 1), nn.ReLU(), nn.Conv2d(dim, dim, 3, 2, 1))
        self.queries = nn.Parameter(torch.randn(queries, dim) * 0.5)
        layer = nn.TransformerDecoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, 2)
        self.head = nn.Linear(dim, CLASSES)

    def forward(self, image):
        memory = self.backbone(image).flatten(2).transpose(1, 2)
        queries = self.queries.expand(image.shape[0], -1, -1)
        return self.head(self.decoder(queries, memory)).mean(1)


class SeparableSpeech(nn.Module):
    """QuartzNet/Jasper's block: time-channel separable Conv1d (a depthwise conv with a long kernel, then a
    pointwise conv), BatchNorm and ReLU, repeated with a residual 1x1 conv + BatchNorm around the block."""

    def __init__(self, width: int = 16, kernel: int = 15):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, width, 11, stride=4, padding=5), nn.BatchNorm1d(width), nn.ReLU())

        def separable(cin, cout):
            return [nn.Conv1d(cin, cin, kernel, padding=kernel // 2, groups=cin), nn.Conv1d(cin, cout, 1),
                    nn.BatchNorm1d(cout)]

        self.block = nn.Sequential(*separable(width, 2 * width), nn.ReLU(), *separable(2 * width, 2 * width))
        self.residual = nn.Sequential(nn.Conv1d(width, 2 * width, 1), nn.BatchNorm1d(2 * width))
        self.head = nn.Linear(2 * width, CLASSES)

    def forward(self, audio):
        x = self.stem(audio[:, None, :])
        return self.head(F.relu(self.block(x) + self.residual(x)).mean(-1))


class BagsOfIds(nn.Module):
    """A recommender's layout (DLRM): ids pooled by an `EmbeddingBag` (sum over each row's bag), an MLP over the
    pooled features."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.bags = nn.EmbeddingBag(TOKENS[1], dim, mode="sum")
        self.mlp = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, ids):
        return self.mlp(self.bags(ids))


def layer_form_image_cases() -> dict:
    return {"spectral_norm_gan": SpectralNormDiscriminator, "standardized_convs": standardized_convs,
            "instance_norm_style": StyleTransfer, "vit_encoder_layers": TinyVit, "swin_windows": TinySwin,
            "detr_query_decoder": QueryDecoder}


# Cases whose input is not an image: name -> (builder, input kind); `bench.cnn_families.build_case` draws them.
LAYER_FORM_SEQUENCE_CASES = {"weight_norm_tcn": (WeightNormTcn, "audio"), "lstm_text": (LstmText, "tokens"),
                             "separable_speech": (SeparableSpeech, "audio"), "embedding_bags": (BagsOfIds, "tokens")}
