"""Text to token tensors: calibration windows and evaluation streams."""

from __future__ import annotations

from pathlib import Path

import torch


def load_tokenizer(folder: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """One 1-D stream of token ids for the whole text (no special tokens added)."""
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def calibration_windows(tokens: torch.Tensor, samples: int, sequence_length: int, seed: int = 0) -> torch.Tensor:
    """[samples, sequence_length] windows at random offsets of a token stream (GPTQ's C4 recipe), fewer windows
    when the stream is short, and one shorter window when it is shorter than `sequence_length`."""
    if tokens.dim() != 1 or len(tokens) < 2:
        raise ValueError("calibration needs a 1-D stream of at least 2 tokens")
    length = min(sequence_length, len(tokens))
    positions = len(tokens) - length + 1
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randperm(positions, generator=generator)[:samples]
    return torch.stack([tokens[start: start + length] for start in starts.tolist()])


def batches(windows: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return list(windows.split(batch_size))
