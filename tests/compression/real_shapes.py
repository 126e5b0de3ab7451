"""Small models shaped like real pretrained ones (built from configs, never downloaded), shared by the pruning and
iPQ tests: a torchcrepe-style 1-D audio CNN, a Conv1d tagger that works on (N, T, C) between convolutions, a
tiny BERT encoder exported with two integer inputs, and a CREPE-shaped net of tall convs (the orientation tests)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PitchCNN(nn.Module):
    """torchcrepe's layout at toy width: audio frames (N, L) -> (N, 1, L, 1); every conv has a (k, 1) kernel and is
    preceded by a time-axis F.pad; relu, BatchNorm, (2, 1) max-pooling; the channels are moved inside the time axis
    by permute(0, 2, 1, 3).reshape(N, T * C) before a linear layer with sigmoid outputs over pitch bins."""

    def __init__(self, widths=(16, 8, 8, 8), kernels=(64, 16, 16, 16), first_stride=4, frame=256, bins=24):
        super().__init__()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.paddings = []
        channels, length = 1, frame
        for index, (width, kernel) in enumerate(zip(widths, kernels)):
            stride = first_stride if index == 0 else 1
            self.convs.append(nn.Conv2d(channels, width, (kernel, 1), (stride, 1)))
            self.norms.append(nn.BatchNorm2d(width, eps=1e-3))
            total = kernel - stride if index == 0 else kernel - 1
            self.paddings.append((total // 2, total - total // 2))
            channels, length = width, length // stride // 2
        self.time_steps = length
        self.classifier = nn.Linear(length * channels, bins)

    def forward(self, audio):
        x = audio[:, None, :, None]
        for conv, norm, padding in zip(self.convs, self.norms, self.paddings):
            x = F.pad(x, (0, 0, *padding))
            x = F.max_pool2d(norm(F.relu(conv(x))), (2, 1), (2, 1))
        x = x.permute(0, 2, 1, 3).reshape(-1, self.classifier.in_features)
        return torch.sigmoid(self.classifier(x))


class TimeMixCNN(nn.Module):
    """Conv1d features, a linear applied per time step on (N, T, C) (transpose in and out), a residual add,
    dropout, mean over time and a sigmoid multi-label head."""

    def __init__(self, width=16, tags=6):
        super().__init__()
        self.conv1 = nn.Conv1d(2, width, 5)
        self.norm = nn.BatchNorm1d(width)
        self.mix = nn.Linear(width, width)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)
        self.head = nn.Linear(width, tags)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        x = F.relu(self.norm(self.conv1(F.pad(x, (2, 2)))))
        mixed = torch.tanh(self.mix(x.transpose(1, 2))).transpose(1, 2)
        x = F.gelu(self.conv2(self.dropout(mixed))) + x
        return torch.sigmoid(self.head(F.avg_pool1d(x, 2).mean(-1)))


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                size = module.num_features
                module.running_mean.copy_(torch.rand(size, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(size, generator=generator) - 0.5)


class Encoder(nn.Module):
    """A BERT model as a sentence encoder: (input_ids, attention_mask) -> last hidden state."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def tiny_bert(layers: int = 2, heads: int = 4, hidden: int = 32, intermediate: int = 64, vocab: int = 100):
    import transformers

    config = transformers.BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=intermediate,
                                     max_position_embeddings=32, attn_implementation="sdpa")
    torch.manual_seed(0)
    return Encoder(transformers.BertModel(config, add_pooling_layer=False)).eval()


def bert_inputs(batch: int = 3, length: int = 8, vocab: int = 100, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, -3:] = 0
    return ids, mask


class TallAudioNet(nn.Module):
    """CREPE's shape of network: 1-D convolutions written as (k, 1) Conv2d over [N, C, time, 1], time-axis pads,
    a strided first layer, a dilated one, a grouped one, then a (k, 3) conv over a three-wide input (left alone)."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(1, 8, (32, 1), stride=(4, 1))
        self.dilated = nn.Conv2d(8, 8, (5, 1), dilation=(2, 1), padding=(4, 0))
        self.grouped = nn.Conv2d(8, 8, (3, 1), groups=2)
        self.wide = nn.Conv2d(8, 4, (3, 3))
        self.head = nn.Linear(4 * 13, 6)

    def forward(self, audio):
        x = audio[:, None, :, None]
        x = F.relu(self.first(F.pad(x, (0, 0, 16, 15))))
        x = F.relu(self.dilated(x))
        x = F.max_pool2d(F.relu(self.grouped(x)), (2, 1))
        x = self.wide(x.expand(-1, -1, -1, 3))  # three wide: not a tall conv
        return torch.sigmoid(self.head(x.flatten(1)))
