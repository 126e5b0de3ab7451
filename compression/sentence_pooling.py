"""A sentence-transformers folder's pooling (+ normalization) as a module, and its files carried to a written folder.

The formulas are sentence-transformers' own (`models.Pooling`, `models.Normalize`), computed from the attention
mask so that padding never counts: mean over real tokens (sum / max(count, 1e-9)), the first token (cls), the
largest value over real tokens (padded positions set to -1e9), the last real token; then x / max(||x||, 1e-12).
What the folder declares is read by `compression.archive.sentence_transformers` (JSON only).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from compression.archive.sentence_transformers import MODULE_PATH, MODULES_FILE, SentenceEmbedding

# Copied unchanged into a compressed folder, with every module folder modules.json names, so that
# sentence-transformers loads the result as it loaded the upload.
TOP_LEVEL_FILES = (MODULES_FILE, "config_sentence_transformers.json", "sentence_bert_config.json")


class SentencePooling(torch.nn.Module):
    """(last_hidden_state [N, L, H], attention_mask [N, L]) -> sentence embedding [N, H]. No parameters: the
    program's weights keep the names of the folder's transformer."""

    def __init__(self, embedding: SentenceEmbedding):
        super().__init__()
        self.mode, self.normalize = embedding.pooling, embedding.normalize

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = pool(hidden, attention_mask, self.mode)
        return F.normalize(pooled, p=2, dim=1) if self.normalize else pooled


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    real = attention_mask.unsqueeze(-1) != 0
    if mode == "mean":
        weights = real.to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return hidden.masked_fill(~real, -1e9).amax(1)
    if mode == "lasttoken":
        # The last real position whatever the padding side (0 when a row has no real token, as theirs).
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = ((attention_mask != 0).long() * positions).argmax(1)
        return hidden.gather(1, last.view(-1, 1, 1).expand(-1, 1, hidden.shape[2])).squeeze(1)
    raise ValueError(f"pooling mode '{mode}' is not computed here")


def copy_sentence_transformers_files(source: Path, destination: Path) -> list[str]:
    """Copy the source folder's sentence-transformers settings and module folders (as unpacked by the archive
    reader: JSON only) into `destination`; returns what was copied. Nothing when the source has no modules.json."""
    if not (source / MODULES_FILE).exists():
        return []
    copied = []
    for name in TOP_LEVEL_FILES:
        if (source / name).exists():
            shutil.copy2(source / name, destination / name)
            copied.append(name)
    for entry in json.loads((source / MODULES_FILE).read_text()):
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str) or not MODULE_PATH.match(path):  # the Transformer: the folder itself
            continue
        (destination / path).mkdir(parents=True, exist_ok=True)  # Normalize's folder is empty
        if (source / path).is_dir():
            shutil.copytree(source / path, destination / path, dirs_exist_ok=True)
        copied.append(f"{path}/")
    return copied
