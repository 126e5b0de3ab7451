"""Tiny models whose outputs are not class logits: what real encoders and audio models look like in miniature."""

import torch
from torch import nn


class MeanPooledEncoder(nn.Module):
    """A sentence encoder in miniature: token embeddings, a projection, mean pooling over the attention mask."""

    def __init__(self):
        super().__init__()
        self.embed, self.proj = nn.Embedding(50, 16), nn.Linear(16, 16)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        return (self.proj(self.embed(input_ids)) * mask).sum(1) / mask.sum(1).clamp(min=1)


class PitchNet(nn.Module):
    """A 1-D audio CNN in miniature: padding before a (5,)-kernel convolution, sigmoid over 12 bins."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv1d(1, 4, 5), nn.Linear(4 * 32, 12)

    def forward(self, x):
        return torch.sigmoid(self.head(self.conv(nn.functional.pad(x, (2, 2))).flatten(1)))


def encoder_inputs(count: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and an attention mask whose later positions are padding for some examples."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (count, 6), generator=generator)
    mask = (torch.arange(6) < torch.randint(2, 7, (count, 1), generator=generator)).long()
    return ids, mask
