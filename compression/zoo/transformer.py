from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder block; attention written out with linear layers (quantizable, exportable)."""

    def __init__(self, dim: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU(), nn.Linear(ff_dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(batch, length, 3, self.heads, dim // self.heads).unbind(2)
        attended = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.dropout(self.proj(attended.transpose(1, 2).reshape(batch, length, dim)))
        return x + self.dropout(self.ff(self.norm2(x)))


class TinyTransformer(nn.Module):
    """Token ids [N, L] (int64) -> class logits [N, C]: embeddings + learned positions, encoder, mean pooling."""

    def __init__(self, vocab_size: int, max_length: int, num_classes: int, dim: int, heads: int, layers: int,
                 ff_dim: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.randn(1, max_length, dim) * 0.02)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, ff_dim, dropout) for _ in range(layers)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(input_ids) + self.position[:, :input_ids.shape[1]]
        return self.head(self.norm(self.blocks(x)).mean(dim=1))


def tiny_transformer(vocab_size: int = 256, max_length: int = 64, num_classes: int = 2, dim: int = 64,
                     heads: int = 4, layers: int = 2, ff_dim: int = 128, dropout: float = 0.0) -> TinyTransformer:
    if dim % heads:
        raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
    return TinyTransformer(vocab_size, max_length, num_classes, dim, heads, layers, ff_dim, dropout)
