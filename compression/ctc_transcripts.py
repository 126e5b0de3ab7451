"""What compressing a CTC speech recognizer changes in what it writes.

A speech-recognition job is judged, as any logits job, by top-1 agreement per output row: here per audio frame.
Most frames of a trained CTC model are blanks, which stay blanks, so that agreement stays high while words
change. Each model of the job is therefore also read as transcripts, the greedy CTC decoding of transformers'
speech-recognition pipeline (the most likely token at each frame, repeats merged, blanks dropped), and compared
with the original model's transcripts of the same audio:

- `token_error_rate`: the edit distance between the token sequences over the original's token count (needs
  nothing but the blank's id, the config's `pad_token_id`);
- `word_error_rate` and `character_error_rate`: the same on the text the folder's own tokenizer decodes from the
  frames, where the folder has one (words split at whitespace, characters counted with the spaces);
- `examples_changed`: how many transcripts differ at all.

Rates are percentages of the original's length (0: the same transcripts; above 100 when the model writes more
than the original did).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

BATCH_SIZE = 8


def greedy_tokens(logits: torch.Tensor, blank: int) -> list[list[int]]:
    """Each example's token ids from its frame logits [batch, frames, vocabulary]: the most likely token per frame,
    runs of one token merged, blanks dropped."""
    best = logits.argmax(-1)
    tokens = []
    for frames in best.tolist():
        merged = [token for index, token in enumerate(frames) if index == 0 or token != frames[index - 1]]
        tokens.append([token for token in merged if token != blank])
    return tokens


def edit_distance(said: list, reference: list) -> int:
    """Levenshtein distance (substitutions, insertions and deletions each cost 1), a row of the table at a time:
    a row's insertions are its running minimum of (cost - position) shifted back, so no Python loop runs over
    the columns."""
    if not reference:
        return len(said)
    positions = np.arange(len(reference) + 1)
    codes = {item: code for code, item in enumerate(dict.fromkeys([*said, *reference]))}
    wanted = np.array([codes[item] for item in reference])
    row = positions.copy()
    for index, item in enumerate(said, start=1):
        kept = np.minimum(row[1:] + 1, row[:-1] + (wanted != codes[item]))  # deletion, or (mis)match
        candidate = np.concatenate(([index], kept))
        row = np.minimum.accumulate(candidate - positions) + positions  # then insertions along the row
    return int(row[-1])


@dataclass
class _Rate:
    errors: int = 0
    length: int = 0

    def add(self, said: list, reference: list) -> None:
        self.errors += edit_distance(said, reference)
        self.length += len(reference)

    def percent(self) -> float:
        return 100.0 * self.errors / self.length if self.length else (0.0 if not self.errors else 100.0)


@dataclass
class TranscriptChange:
    """The transcripts of a model against the original's, example by example."""

    tokens: _Rate = field(default_factory=_Rate)
    words: _Rate = field(default_factory=_Rate)
    characters: _Rate = field(default_factory=_Rate)
    examples: int = 0
    changed: int = 0

    def add(self, tokens: list[int], reference_tokens: list[int], text: str | None, reference_text: str | None):
        self.examples += 1
        self.changed += tokens != reference_tokens
        self.tokens.add(tokens, reference_tokens)
        if text is not None and reference_text is not None:
            self.words.add(text.split(), reference_text.split())
            self.characters.add(list(" ".join(text.split())), list(" ".join(reference_text.split())))

    def result(self, decoded: bool) -> dict:
        rates = {"token_error_rate": self.tokens.percent()}
        if decoded:
            rates |= {"word_error_rate": self.words.percent(), "character_error_rate": self.characters.percent()}
        return {"compared_with": "the original model's greedy transcripts", "samples": self.examples,
                **rates, "examples_changed": self.changed}


def folder_decoder(folder: Path):
    """The folder's own tokenizer's `decode` of frame ids (transformers' CTC tokenizers merge repeats and drop the
    blank themselves), or None where it has none that loads."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception:  # noqa: BLE001 - no tokenizer files, or ones transformers cannot read: token rates only
        return None
    return lambda frames: tokenizer.decode(frames, skip_special_tokens=False)


class TranscriptComparison:
    """The original's transcripts of some audio, decoded once; `__call__` gives another model's change from them."""

    def __init__(self, reference: torch.nn.Module, inputs: torch.Tensor, blank: int, decode=None):
        self.batches = list(torch.split(inputs, BATCH_SIZE))
        self.blank, self.decode = blank, decode
        self.reference = [self._read(reference, batch) for batch in self.batches]

    def _read(self, model: torch.nn.Module, batch: torch.Tensor) -> list[tuple[list[int], str | None]]:
        with torch.no_grad():
            logits = model(batch)
        logits = logits if isinstance(logits, torch.Tensor) else logits[0]
        frames = logits.argmax(-1).tolist()
        tokens = greedy_tokens(logits, self.blank)
        texts = [self.decode(row) for row in frames] if self.decode else [None] * len(frames)
        return list(zip(tokens, texts))

    def __call__(self, model: torch.nn.Module) -> dict:
        change = TranscriptChange()
        for batch, expected in zip(self.batches, self.reference):
            for (tokens, text), (reference_tokens, reference_text) in zip(self._read(model, batch), expected):
                change.add(tokens, reference_tokens, text, reference_text)
        return change.result(self.decode is not None)


def add_transcript_changes(result, reference: torch.nn.Module, inputs: torch.Tensor, blank: int, folder: Path,
                           ctx) -> None:
    """Give each stage of a speech-recognition job's `result` (a `PipelineResult`) its transcripts' change from the
    `reference`'s (the exported original) on `inputs` (the evaluated examples), under its metrics'
    "transcripts"; the baseline says how they were read."""
    decode = folder_decoder(folder)
    comparison = TranscriptComparison(reference, inputs, blank, decode)
    result.baseline["transcripts"] = {"samples": len(inputs), "decoding": "greedy CTC", "blank_token": blank,
                                      "text_decoded_with": "the folder's tokenizer" if decode else None}
    for index, stage in enumerate(result.stages):
        ctx.progress("transcripts", index, len(result.stages))
        if stage.model is not None:
            stage.metrics["transcripts"] = comparison(stage.model)
    ctx.progress("transcripts", len(result.stages), len(result.stages))
