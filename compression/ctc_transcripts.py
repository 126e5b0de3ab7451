"""What compressing a CTC speech recognizer changes in what it writes.

A speech-recognition job is judged, as any logits job, by top-1 agreement per output row: here per audio frame.
Most frames of a trained CTC model are blanks, which stay blanks, so that agreement stays high while words
change. Each model of the job is therefore also read as transcripts, the greedy CTC decoding of transformers'
speech-recognition pipeline (the most likely token at each frame, repeats merged, blanks dropped), and compared
with the original model's transcripts of the same audio:

- `token_error_rate`: the edit distance between the token sequences over the original's token count (needs
  nothing but the blank's id: the config's `blank_token_id`, else its `pad_token_id`, as transformers' CTC loss
  and tokenizers take it);
- `word_error_rate` and `character_error_rate`: the same on the text the folder's own tokenizer decodes from the
  frames, where the folder has one (words split at whitespace, characters counted with the spaces);
- `examples_changed`: how many transcripts differ at all.

Rates are percentages of the original's length (0: the same transcripts; above 100 when the model writes more
than the original did; 100 where the original wrote nothing and the model something). Where the dataset holds reference transcripts of the evaluated audio
(`<split>.transcript`), the original's and each stage's word and character error rates against them are given
too (`against_references`; both sides case-folded, whitespace collapsed): what the compression costs in the
error rate users know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from compression.archive.errors import InvalidUpload
from compression.archive.hf_architectures import TRANSCRIPTS_NEED_A_TOKENIZER

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
    """The folder's own tokenizer's `decode` of frame ids as transformers' speech-recognition pipeline calls it
    (its CTC tokenizers merge repeats and drop the blank themselves; asked to skip special tokens, they would drop
    the blank first and merge the two L of HELLO), then special tokens (`<s>`, `<unk>`) left out of the text, as
    no reference transcript holds them; None where the folder has no tokenizer that loads."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except Exception:  # noqa: BLE001 - no tokenizer files, or ones transformers cannot read: token rates only
        return None
    specials = [token for token in tokenizer.all_special_tokens if token]

    def decode(frames: list[int]) -> str:
        text = tokenizer.decode(frames, skip_special_tokens=False)
        for token in specials:
            text = text.replace(token, "")
        return " ".join(text.split())

    return decode


class TranscriptComparison:
    """The original's transcripts of some audio, decoded once; `__call__` gives another model's change from them
    and, with `references` (the dataset's transcripts of the audio), its error rates against those."""

    def __init__(self, reference: torch.nn.Module, inputs: torch.Tensor, blank: int, decode=None,
                 references: list[str] | None = None):
        self.batches = list(torch.split(inputs, BATCH_SIZE))
        self.blank, self.decode = blank, decode
        self.references = references if decode is not None else None
        self.original = self._read(reference)

    def _read(self, model: torch.nn.Module) -> list[tuple[list[int], str | None]]:
        """Each example's (tokens, decoded text or None)."""
        readings = []
        for batch in self.batches:
            with torch.no_grad():
                logits = model(batch)
            logits = logits if isinstance(logits, torch.Tensor) else logits[0]
            frames = logits.argmax(-1).tolist()
            texts = [self.decode(row) for row in frames] if self.decode else [None] * len(frames)
            readings += zip(greedy_tokens(logits, self.blank), texts)
        return readings

    def original_against_references(self) -> dict | None:
        return self._against_references(self.original)

    def _against_references(self, readings) -> dict | None:
        """Word and character error rates of the decoded text against the references, both case-folded with their
        whitespace collapsed (a reference in lower case reads as wav2vec2's upper-case output)."""
        if self.references is None:
            return None
        words, characters = _Rate(), _Rate()
        for (_, text), reference in zip(readings, self.references):
            said, wanted = " ".join(text.casefold().split()), " ".join(reference.casefold().split())
            words.add(said.split(), wanted.split())
            characters.add(list(said), list(wanted))
        return {"samples": len(readings), "word_error_rate": words.percent(),
                "character_error_rate": characters.percent()}

    def __call__(self, model: torch.nn.Module) -> dict:
        readings = self._read(model)
        change = TranscriptChange()
        for (tokens, text), (original_tokens, original_text) in zip(readings, self.original):
            change.add(tokens, original_tokens, text, original_text)
        moved = change.result(self.decode is not None)
        if (against := self._against_references(readings)) is not None:
            moved["against_references"] = against
        return moved


def add_transcript_changes(result, reference: torch.nn.Module, inputs: torch.Tensor, blank: int, folder: Path,
                           ctx, references: list[str] | None = None) -> None:
    """Give each stage of a speech-recognition job's `result` (a `PipelineResult`) its transcripts' change from the
    `reference`'s (the exported original) on `inputs` (the evaluated examples), under its metrics'
    "transcripts", and, given the dataset's `references` for those examples, the error rates against them of the
    stage (there) and of the original (in the baseline's, which says how the transcripts were read)."""
    decode = folder_decoder(folder)
    if references is not None and decode is None:  # its tokenizer files are there (checked first) but do not load
        raise InvalidUpload(TRANSCRIPTS_NEED_A_TOKENIZER.format(arrays="<split>.transcript") + " that transformers "
                            "loads")
    comparison = TranscriptComparison(reference, inputs, blank, decode, references)
    result.baseline["transcripts"] = {"samples": len(inputs), "decoding": "greedy CTC", "blank_token": blank,
                                      "text_decoded_with": "the folder's tokenizer" if decode else None}
    if (against := comparison.original_against_references()) is not None:
        result.baseline["transcripts"]["against_references"] = against
    for index, stage in enumerate(result.stages):
        ctx.progress("transcripts", index, len(result.stages))
        if stage.model is not None:
            stage.metrics["transcripts"] = comparison(stage.model)
    ctx.progress("transcripts", len(result.stages), len(result.stages))
