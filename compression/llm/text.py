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


def check_tokenizes(tokenizer, texts: list[str]) -> None:
    """Refuse a tokenizer that turns text into no tokens at all: transformers picks the tokenizer class a
    model_type registers over the folder's own (Qwen2's byte-level BPE for a word-level `tokenizer.json`), which
    then reads nothing, and the job would run on padding alone."""
    sample = [text for text in texts[:64] if text.strip()]
    if sample and not any(tokenizer(sample, add_special_tokens=False)["input_ids"]):
        raise ValueError(f"the folder's tokenizer, loaded by transformers as {type(tokenizer).__name__}, turns the "
                         "text into no tokens; upload the tokenizer files the model was trained with (a "
                         "tokenizer.json that this class reads)")


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
