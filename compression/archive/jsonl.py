"""A `.jsonl` text dataset: one JSON object per line, `{"split": "train", "text": "...", "label": 3}`.

`split` names the split the row belongs to (like the `<split>.` prefix of an `.npz` array), `text` is the example
and `label` (optional: in a split, every row or none) an integer class index (a whole-number float such as 2.0
is read as that index). `text_pair` (optional: in the whole file, every row or none) is the second text of a
sentence pair, for cross-encoders and NLI classifiers, which the tokenizer joins to `text` with its separator
(and, for BERT-style models, segment ids). Lines are read one at a time, each
capped at `max_metadata_bytes` and parsed under the JSON depth cap; the file as a whole is capped by the upload
size. Nothing else is allowed in a row, so a typo (`"lable"`) is refused rather than ignored.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from compression.archive.errors import InvalidUpload
from compression.archive.jsontext import parse_json
from compression.archive.limits import DEFAULT_LIMITS, ArchiveLimits

TEXT_INPUT = "text"
PAIR_INPUT = "text_pair"
# Checked at submission (app.jobs.validation) and again by the worker (compression.llm.pipeline).
PAIRS_NOT_FOR_CAUSAL_LM = ("a causal-lm job reads running text: its .jsonl rows take no 'text_pair' (sentence pairs "
                           "are for encoders and classifiers)")
LABEL_ARRAY = "y"  # the name labels have in a manifest, as in an .npz
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")
_ROW_KEYS = {"split", "text", "text_pair", "label"}


@dataclass
class TextSplit:
    rows: int = 0
    texts: list[str] = field(default_factory=list)  # only when asked to keep them
    labels: list[int] = field(default_factory=list)
    characters: int = 0
    paired: bool = False  # the rows are sentence pairs
    pairs: list[str] = field(default_factory=list)  # their second texts, kept like texts


def looks_like_jsonl(source: BinaryIO) -> bool:
    """Whether the file starts like JSON lines (an object), not like a zip."""
    position = source.tell()
    start = source.read(64).lstrip(b"\xef\xbb\xbf \t\r\n")
    source.seek(position)
    return start.startswith(b"{")


def read_jsonl(source: str | Path | BinaryIO, limits: ArchiveLimits = DEFAULT_LIMITS,
               keep_text: bool = False) -> dict[str, TextSplit]:
    """Split name -> its rows (texts only with `keep_text`; labels always, for their range)."""
    if isinstance(source, (str, Path)):
        with open(source, "rb") as file:
            return read_jsonl(file, limits, keep_text)
    splits: dict[str, TextSplit] = {}
    labelled: dict[str, bool] = {}
    paired: bool | None = None
    number = 0
    while line := source.readline(limits.max_metadata_bytes + 1):
        number += 1
        if len(line) > limits.max_metadata_bytes:
            raise InvalidUpload(f"line {number} is longer than {limits.max_metadata_bytes} bytes, the limit")
        if not line.strip():
            continue
        row = parse_json(line, f"line {number}", limits)
        unknown = set(row) - _ROW_KEYS
        if unknown:
            raise InvalidUpload(f"line {number} has unknown field(s) {sorted(unknown)}; a row holds 'split', "
                                "'text' and optionally 'text_pair' and 'label'")
        split, text, label = row.get("split"), row.get("text"), row.get("label")
        if not isinstance(split, str) or not _SPLIT_NAME.match(split):
            raise InvalidUpload(f"line {number}: 'split' must be a name of letters, digits, '_' or '-' "
                                "(e.g. \"train\", \"val\")")
        if not isinstance(text, str) or not text:
            raise InvalidUpload(f"line {number}: 'text' must be a non-empty string")
        pair = row.get(PAIR_INPUT)
        if pair is not None and (not isinstance(pair, str) or not pair):
            raise InvalidUpload(f"line {number}: 'text_pair' must be a non-empty string (the second text of a pair)")
        if paired is None:
            paired = pair is not None
        elif paired != (pair is not None):
            raise InvalidUpload(f"line {number}: {'no' if paired else 'a'} 'text_pair' where the rows before "
                                f"{'have one' if paired else 'have none'}; give every row of the file a "
                                "'text_pair' (sentence pairs) or none")
        has_label = label is not None
        if isinstance(label, float) and label.is_integer():
            label = int(label)  # 2.0 (written by a float column) is class 2
        if has_label and (not isinstance(label, int) or isinstance(label, bool) or label < 0):
            hint = (" (class names must be mapped to indices: the model's config.json label2id gives its order)"
                    if isinstance(label, str) else "")
            raise InvalidUpload(f"line {number}: 'label' must be a class index (an integer >= 0), got "
                                f"{json.dumps(label)[:40]}{hint}")
        if labelled.setdefault(split, has_label) != has_label:
            raise InvalidUpload(f"line {number}: split '{split}' mixes rows with and without 'label'; label every "
                                "row of a split or none")
        rows = splits.setdefault(split, TextSplit())
        rows.rows += 1
        rows.characters += len(text) + len(pair or "")
        rows.paired = pair is not None
        if keep_text:
            rows.texts.append(text)
            if pair is not None:
                rows.pairs.append(pair)
        if has_label:
            rows.labels.append(label)
    if not splits:
        raise InvalidUpload("the .jsonl file holds no rows; write one JSON object per line with 'split' and 'text'")
    return splits


def manifest_splits(splits: dict[str, TextSplit]) -> tuple[dict[str, dict], dict[str, list[int]]]:
    """The manifest of a text dataset in the shape an `.npz` manifest has: per split, `text` (and `y`) with the
    number of rows as the shape."""
    described, label_range = {}, {}
    for name, rows in splits.items():
        arrays = {TEXT_INPUT: {"shape": [rows.rows], "dtype": "str", "characters": rows.characters}}
        if rows.paired:
            arrays[PAIR_INPUT] = {"shape": [rows.rows], "dtype": "str"}
        if rows.labels:
            arrays[LABEL_ARRAY] = {"shape": [len(rows.labels)], "dtype": "int64"}
            label_range[name] = [min(rows.labels), max(rows.labels)]
        described[name] = arrays
    return described, label_range
