"""A `.jsonl` text dataset: one JSON object per line, `{"split": "train", "text": "...", "label": 3}`.

`split` names the split the row belongs to (like the `<split>.` prefix of an `.npz` array), `text` is the example
and `label` (optional: in a split, every row or none) its class: an integer index (a whole-number float such as 2.0
is read as that index, false and true as 0 and 1) or a class name, which the worker maps to its index with the
model's config.json (`compression.text_labels`), or a list of them (possibly empty): the labels that apply to the
text, for a multi-label classifier, or a vector of 0/1 flags, one per class (told apart by a repeated value, as any
vector over three or more classes has); or, for a regression head (config.json `problem_type: "regression"`, or
one label), the value it predicts (a number such as 3.8: a file with one that is not whole holds values,
`TextSplit.values`), or for a head with K outputs a list of its K values (`TextSplit.list_width`; a list of whole
numbers only is told from a class list by the model, `compression.text_labels`). A file uses one form: indices or
names, single labels or lists, or values. `text_pair`
(optional: in the whole file, every row or none) is the second text of a sentence pair, for cross-encoders and NLI
classifiers, which the tokenizer joins to `text` with its separator (and, for BERT-style models, segment ids).
Instead of `label` (a file gives one of the four): `tags` labels the words of `text` (as `text.split()` cuts them)
for a token classifier, one class per word (index or name; -100 for a word no tag reads), as NER datasets do
(`" ".join(tokens)` and `ner_tags`), and the worker gives each word's tag to its first token; `answer` (or SQuAD's
`answers`, `compression.archive.answers`) is where in `text_pair`, a reader's context, the answer to the question
`text` lies; `target` is the text a sequence-to-sequence model (task seq2seq-lm: T5, BART, Marian) should write for
`text` (its translation, its summary; in a split, every row or none: where none, the job measures the compressed
model against what the upload writes, `compression.seq2seq_lm`). `choices` (in the whole file, every row or none,
each row as many) are the candidates a multiple-choice model scores after `text`, and `label` then the index of the
right one or its text (`compression.archive.choices`). Lines are read one at a time, each capped at
`max_metadata_bytes` and parsed under the JSON depth cap; the file as a whole is capped by the upload size.
Nothing else is allowed in a row, so a typo (`"lable"`) is refused rather than ignored. Read for a manifest only
(the API's upload check), a split's labels are summarized, not kept (`compression.archive.label_summary`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from compression.archive.answers import ANSWER_KEYS, row_answer
from compression.archive.choices import CHOICES, choice_label, row_choices
from compression.archive.errors import InvalidUpload
from compression.archive.jsontext import parse_json
from compression.archive.label_summary import IGNORED_LABEL, LabelSummary
from compression.archive.limits import DEFAULT_LIMITS, ArchiveLimits

TEXT_INPUT = "text"
PAIR_INPUT = "text_pair"
# Checked at submission (app.jobs.validation) and again by the worker (compression.llm.pipeline).
PAIRS_NOT_FOR_CAUSAL_LM = ("a causal-lm job reads running text: its .jsonl rows take no 'text_pair' (sentence pairs "
                           "are for encoders and classifiers)")
# Checked at submission (app.jobs.validation) and again by the worker (compression.hf_program).
ANSWERS_NOT_READ = ("a question-answering model is labelled with answers, not 'label' or 'tags': give each row "
                    "'answer': {\"text\": ..., \"start\": ...} (where the answer starts in 'text_pair', the "
                    "context) or SQuAD's 'answers', or no label at all (the job then measures how often the "
                    "compressed model picks the upload's answer start and end)")
ANSWERS_NEED_A_READER = ("rows give answers, which label an extractive question-answering model (task "
                         "question-answering); this model is not one: give a 'label' per row, or none")
LABEL_ARRAY = "y"  # the name labels have in a manifest, as in an .npz
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,100}$")
TARGET = "target"
_ROW_KEYS = {"split", "text", "text_pair", "label", "tags", TARGET, CHOICES, *ANSWER_KEYS}
# Checked at submission (app.jobs.validation) and again by the worker (compression.hf_program).
TARGETS_NEED_SEQ2SEQ = ("rows give a 'target', the text a sequence-to-sequence model (task seq2seq-lm: T5, BART, "
                        "Marian, ...) writes for 'text'; this model is not one: remove 'target', or give a 'label' "
                        "per row")
MASKED_LM_READS_TEXT = ("a fill-mask job is judged on tokens the worker masks in each row's text (masked-LM "
                        "accuracy), and its rows take no 'label', 'tags' or 'answer': remove them, or upload a "
                        "checkpoint saved with the head they label (task sequence-classification, "
                        "token-classification or question-answering)")
PAIRS_NOT_FOR_SEQ2SEQ = ("a seq2seq-lm model reads one text per row: join a pair into 'text' as the model was "
                         "trained on it (T5's 'question: ... context: ...'), without 'text_pair'")
# The rows of a split without targets whose outputs the upload writes before a seq2seq-lm job starts: greedy
# generation runs the decoder once per token, 64 tokens a row: measured 4.1 s per 16 rows of a T5-small-sized model
# on one core (2026-12-06), about 4 minutes per thousand rows (larger models take longer; not measured).
MAX_WRITTEN_ROWS = 1024
TOO_MANY_TO_WRITE = ("split '{split}' has {rows:,} rows and no 'target': the upload would write the output of each "
                     "before the job starts (greedy generation, one decoder pass per token), and the service does it "
                     f"for at most {MAX_WRITTEN_ROWS:,} rows a split; give the rows their 'target' texts, or keep "
                     f"{MAX_WRITTEN_ROWS:,} of them")
SEQ2SEQ_READS_TARGETS = ("a seq2seq-lm model writes text: label its rows with 'target', the text it should write "
                         "(or give none, and the job compares the compressed model with what the upload writes), "
                         "not with 'label', 'tags' or answers")
MAX_NAME_CHARS = 200  # a class name; config.json's id2label names are short
MAX_LABEL_NAMES = 10_000  # distinct class names in a file, kept in the manifest for the submission check
MAX_LABELS_PER_ROW = 1_000  # entries of one multi-label row
MIXED_LISTS = ("the 'label' lists mix 0/1 flag vectors, one entry per class (a row repeats a value, as [0, 1, 1] "
               "does), with lists of class indices or flag vectors of other lengths")
MIXED_LISTS_FIX = ("; give every row one form: flags for every class, or the indices of the classes that apply (or, "
                   "for a regression head with several outputs, one list of values per row, all of one length)")


@dataclass
class TextSplit:
    rows: int = 0
    texts: list[str] = field(default_factory=list)  # only when asked to keep them
    # int class indices, str class names, or (multi-label) lists of either: the file's one form (`LabelForm`); or
    # numbers, some not whole: the values a regression head predicts (`values`). Only when asked to keep them;
    # else `summary` holds what the manifest needs.
    labels: list[int | float | str | list] = field(default_factory=list)
    summary: LabelSummary | None = None
    characters: int = 0
    paired: bool = False  # the rows are sentence pairs
    pairs: list[str] = field(default_factory=list)  # their second texts, kept like texts
    names: set[str] = field(default_factory=set)  # the class names its labels use (form "name")
    multi_label: bool = False  # each label is a list of the classes that apply
    flag_width: int | None = None  # the lists were 0/1 flags, one per class, of this length (made index lists)
    values: bool = False  # a label is a number that is no class index (3.8): the labels are regression values
    # The one length of its label lists as read (None: no lists, or lists of several lengths): the number of values
    # per row of a regression head with that many outputs, whose values lists of whole numbers can also be.
    list_width: int | None = None
    # Kept labels that were lists, as read (before `_settle_lists` made class-index lists of them): the values a
    # regression head reads from lists of whole numbers.
    lists_as_read: list[list] | None = None
    mixed_lists: bool = False  # lists of one length, some 0/1 flag vectors, some not: a regression head's values only
    per_word: bool = False  # each label is the list of its text's word tags (`tags`), for a token classifier
    answers: bool = False  # each label is the answer's character span in `text_pair` (None: no answer), a reader's
    targeted: bool = False  # every row gives a `target` text (a seq2seq-lm model's reference output)
    targets: list[str] = field(default_factory=list)  # those texts, kept like texts
    choice_count: int | None = None  # every row's number of `choices` (a multiple-choice model's candidates)
    choices: list[list[str]] = field(default_factory=list)  # each row's choices, kept like texts

    @property
    def labelled(self) -> int:
        """How many rows have a label (or tags)."""
        return self.summary.count if self.summary is not None else len(self.labels)

    def index_range(self) -> list[int] | None:
        """[min, max] of the class indices the labels give (None for values, names only, or no labels)."""
        if self.values:
            return None
        if self.summary is not None:
            return self.summary.index_range(self.flag_width is not None)
        indices = self.class_indices()
        return [min(indices), max(indices)] if indices else None

    def class_indices(self) -> list[int]:
        """Every class index its labels give, row after row (the entries of each list, for multi-label rows)."""
        return [entry for label in self.labels for entry in (label if self.multi_label or self.per_word else [label])
                if isinstance(entry, int) and not self.values and entry != IGNORED_LABEL]

    def value_range(self) -> list[float] | None:
        """[min, max] of the labels as values (the numbers of a regression split, of every list for lists of
        values), or None for other labels."""
        if self.summary is not None:
            return self.summary.value_range() if self.values else None
        numbers = [entry for label in self.labels for entry in (label if isinstance(label, list) else [label])
                   if isinstance(entry, (int, float))]
        return [float(min(numbers)), float(max(numbers))] if self.values and numbers else None

    def value_width(self) -> int | None:
        """How many values each row gives, read as a regression head's: 1 for single labels, the lists' one
        length for lists (None where lengths differ)."""
        return self.list_width if self.multi_label or self.list_width is not None else 1

    def values_as_read(self) -> list:
        """The labels as numbers, lists as they were read: a regression head's values."""
        return self.lists_as_read if self.lists_as_read is not None else self.labels


@dataclass
class LabelForm:
    """The one form of a file's labels, fixed by its first label: a `label` per row (class indices or class names,
    one per row or lists: multi-label), word `tags`, or `answer`s."""

    multi_label: bool | None = None
    by_name: bool | None = None  # None until a label (or list entry) is seen
    # A list that repeats a 0/1 value is a vector of flags, one per class ([0, 1, 1]), not of class indices; as
    # every such vector over three or more classes repeats one, one such row makes the file's lists flag vectors.
    flags: bool = False
    field: str | None = None  # "label", "tags" or "answer": what the file's rows give

    def check_field(self, given: str, number: int) -> None:
        """A file labels whole texts ('label'), the words of a token classifier's texts ('tags'), the answers of
        a reader's questions ('answer') or the texts a seq2seq-lm model writes ('target'), one of them throughout."""
        if self.field is not None and self.field != given:
            raise InvalidUpload(f"line {number}: '{given}' where the rows before give '{self.field}'; a file labels "
                                "whole texts ('label'), the words of a token classifier's texts ('tags'), the "
                                "answers of a question-answering model ('answer') or the texts a seq2seq-lm model "
                                "writes ('target'), one of them")
        self.field = given

    def check_tags(self, tags: list, number: int) -> None:
        """A row's word tags: the file tags words throughout, by class index or by name."""
        self.check_field("tags", number)
        self.multi_label = False
        self._check_form(tags, number)

    def check(self, label, number: int) -> None:
        self.check_field("label", number)
        is_list = isinstance(label, list)
        if is_list and len(set(label)) < len(label) and set(label) <= {0, 1}:
            self.flags = True
        if self.multi_label is None:
            self.multi_label = is_list
        elif self.multi_label != is_list:
            raise InvalidUpload(f"line {number}: a {'list' if is_list else 'single'} 'label' where the labels "
                                f"before are {'lists' if self.multi_label else 'single classes'}; a file gives "
                                "every row one class, or every row a list of the classes that apply (multi-label)")
        self._check_form(label if is_list else [label], number)

    def _check_form(self, entries: list, number: int) -> None:
        for entry in entries:
            if entry == IGNORED_LABEL:  # a word no tag reads, in files of names and of indices alike
                continue
            by_name = isinstance(entry, str)
            if self.by_name is None:
                self.by_name = by_name
            elif self.by_name != by_name:
                raise InvalidUpload(f"line {number}: a class {'name' if by_name else 'index'} where the labels "
                                    f"before are class {'indices' if by_name else 'names'}; use one form in a file")


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
    form = LabelForm()
    paired: bool | None = None
    choice_count: int | None = None  # the file's number of choices per row (0: rows without)
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
                                "'text' and optionally 'text_pair' and one of 'label', 'tags' (a token classifier's "
                                "word tags), 'answer' (a question-answering model's), 'target' (the text a "
                                "seq2seq-lm model writes) and 'choices' (a multiple-choice model's candidates)")
        split, text, label = row.get("split"), row.get("text"), row.get("label")
        if split is None:
            raise InvalidUpload(f"line {number} has no 'split': every row names the split it belongs to (\"train\" "
                                "for training and calibration, \"val\" for evaluation, the defaults of a job)")
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
        tags = row.get("tags")
        answered = any(key in row for key in ANSWER_KEYS)
        if tags is not None and (label is not None or pair is not None or answered):
            raise InvalidUpload(f"line {number}: 'tags' label the words of a token classifier's text, so a row with "
                                "them has no 'label' (one class for the whole text), answer or 'text_pair'")
        if answered and label is not None:
            raise InvalidUpload(f"line {number}: a row gives a question's answer or a 'label', not both")
        target = row.get(TARGET)
        if target is not None and (not isinstance(target, str) or not target):
            raise InvalidUpload(f"line {number}: 'target' must be a non-empty string (the text a seq2seq-lm model "
                                "writes for 'text')")
        if target is not None and (label is not None or tags is not None or answered or pair is not None):
            raise InvalidUpload(f"line {number}: a row with a 'target' (the text a seq2seq-lm model writes for "
                                "'text') has no 'label', 'tags', answer or 'text_pair'")
        if target is not None:
            form.check_field(TARGET, number)
        choices = row_choices(row, number) if CHOICES in row else None
        if choices is not None and (pair is not None or tags is not None or answered or target is not None):
            raise InvalidUpload(f"line {number}: a row with 'choices' (a multiple-choice model pairs each with "
                                "'text') has no 'text_pair', 'tags', answer or 'target'")
        if choice_count is None:
            choice_count = len(choices) if choices is not None else 0
        elif choice_count != (len(choices) if choices is not None else 0):
            raise InvalidUpload(f"line {number}: {len(choices) if choices else 'no'} 'choices' where the rows before "
                                f"give {choice_count or 'none'}; every row of a file gives the same number of "
                                "choices (the model takes [batch, choices, tokens]), or none")
        if choices is not None and label is not None:
            label = choice_label(label, choices, number)
        rows = splits.get(split)
        if rows is not None and rows.rows and rows.targeted != (target is not None):
            raise InvalidUpload(f"line {number}: split '{split}' mixes rows with and without 'target'; give every "
                                "row of a split its target text, or none")
        has_label = label is not None or tags is not None or answered
        if label is not None:
            label = _row_label(label, number)
            form.check(label, number)
        elif tags is not None:
            label = _row_tags(tags, text, number)
            form.check_tags(label, number)
        elif answered:
            form.check_field("answer", number)
            label = row_answer(row, pair, number)
        if labelled.setdefault(split, has_label) != has_label:
            raise InvalidUpload(f"line {number}: split '{split}' mixes rows with and without 'label', 'tags' or "
                                "'answer'; label every row of a split or none")
        rows = splits.setdefault(split, TextSplit() if keep_text else TextSplit(summary=LabelSummary()))
        rows.rows += 1
        rows.characters += len(text) + len(pair or "")
        rows.paired = pair is not None
        rows.targeted = target is not None
        rows.characters += len(target or "")
        if choices:  # each choice is read after its own copy of the text
            rows.characters += sum(map(len, choices)) + len(text) * (len(choices) - 1)
        rows.choice_count = len(choices) if choices is not None else None
        if keep_text:
            rows.texts.append(text)
            if pair is not None:
                rows.pairs.append(pair)
            if target is not None:
                rows.targets.append(target)
            if choices is not None:
                rows.choices.append(choices)
        if has_label:
            if rows.summary is not None:
                rows.summary.add(label)
            else:
                rows.labels.append(label)
            rows.values = rows.values or _holds_value(label)
            rows.per_word = tags is not None
            rows.answers = answered
            rows.multi_label = isinstance(label, list) and not rows.per_word
            rows.names.update(entry for entry in (label if isinstance(label, list) else [label])
                              if isinstance(entry, str))
            if len(rows.names) > MAX_LABEL_NAMES:
                raise InvalidUpload(f"line {number}: split '{split}' names more than {MAX_LABEL_NAMES} classes; "
                                    "use class indices")
    if not splits:
        raise InvalidUpload("the .jsonl file holds no rows; write one JSON object per line with 'split' and 'text'")
    if any(rows.values for rows in splits.values()):  # one form per file: whole numbers beside 3.8 are values too
        for rows in splits.values():
            rows.values = bool(rows.labelled)
        _settle_value_lists(splits)
    else:
        _settle_lists(splits, form.flags)
    return splits


def _holds_value(label) -> bool:
    """Whether a label as read (`_row_label`) is, or lists, a number that is no class index."""
    return any(isinstance(entry, float) for entry in (label if isinstance(label, list) else [label]))


def _list_lengths(splits: dict[str, TextSplit]) -> list[int]:
    """The lengths of the file's label lists (kept or summarized), sorted."""
    kept = {len(label) for rows in splits.values() if rows.multi_label for label in rows.labels}
    summarized = {length for rows in splits.values() if rows.multi_label and rows.summary is not None
                  for length in rows.summary.lengths}
    return sorted(kept | summarized)


def _settle_value_lists(splits: dict[str, TextSplit]) -> None:
    """Lists in a file of values are each row's values, one per output of a regression head: one length
    throughout."""
    widths = _list_lengths(splits)
    if len(widths) > 1:
        raise InvalidUpload(f"the 'label' lists hold values (numbers that are no class index), one per output of a "
                            f"regression head, but their lengths differ ({widths[:6]}); give every row one value "
                            "per output of the model")
    for rows in splits.values():
        if rows.multi_label:
            rows.multi_label = False
            rows.list_width = widths[0]


def _settle_lists(splits: dict[str, TextSplit], flags: bool) -> None:
    """Multi-label lists as class indices: flag vectors ([0, 1, 1]: classes 1 and 2) become the indices of their
    ones, checked to be one length throughout; lists of classes lose repeats. Kept lists are also kept as read,
    and their one length noted: a regression head reads lists of whole numbers as its values."""
    widths = _list_lengths(splits)
    for rows in splits.values():
        if rows.multi_label:
            rows.list_width = widths[0] if len(widths) == 1 else None
            rows.lists_as_read = rows.labels if rows.summary is None else None
    if not flags:
        for rows in splits.values():
            if rows.multi_label:
                rows.labels = [list(dict.fromkeys(label)) for label in rows.labels]
        return
    lists = [label for rows in splits.values() if rows.multi_label for label in rows.labels]
    summaries = [rows.summary for rows in splits.values() if rows.multi_label and rows.summary is not None]
    if len(widths) > 1:
        raise InvalidUpload(f"{MIXED_LISTS} (lengths {widths[:6]}){MIXED_LISTS_FIX}")
    if any(not set(label) <= {0, 1} for label in lists) or not all(summary.binary_lists for summary in summaries):
        # No flags and no class lists, but the values of a regression head could be so (ratings [1, 1, 0] and
        # [0, 2, 2]): the model decides (`compression.text_labels.label_problems`).
        for rows in splits.values():
            rows.mixed_lists = rows.multi_label
        return
    for rows in splits.values():
        if rows.multi_label:
            rows.labels = [[index for index, flag in enumerate(label) if flag] for label in rows.labels]
            rows.flag_width = widths[0]


def _row_label(label, number: int) -> int | str | list:
    """A row's label as read: a class index, a class name or a value, or a list of them (multi-label classes, or
    the values of a regression head with several outputs), else refused."""
    if isinstance(label, list):
        if len(label) > MAX_LABELS_PER_ROW:
            raise InvalidUpload(f"line {number}: 'label' lists {len(label)} entries, more than {MAX_LABELS_PER_ROW}")
        # Repeats are kept until the whole file is read: they tell 0/1 flag vectors from class lists.
        return [_class(entry, number, in_list=True) for entry in label]
    return _class(label, number, in_list=False)


def _row_tags(tags, text: str, number: int) -> list[int | str]:
    """A row's word tags: a list with one class (index, name, or IGNORED_LABEL) per word of `text`."""
    words = len(text.split())
    if not isinstance(tags, list) or len(tags) != words:
        got = f"{len(tags)} tags" if isinstance(tags, list) else json.dumps(tags)[:40]
        raise InvalidUpload(f"line {number}: 'tags' must be a list with one class per word of 'text' ({words} "
                            f"words, as text.split() cuts them); got {got}")
    return [IGNORED_LABEL if tag == IGNORED_LABEL and not isinstance(tag, bool)
            else _class(tag, number, in_list=True, takes_values=False) for tag in tags]


def _class(value, number: int, in_list: bool, takes_values: bool = True) -> int | float | str:
    """One class: an integer index >= 0 (a whole-number float such as 2.0 written by a float column is that index;
    false and true are classes 0 and 1, as booleans are in an .npz) or a class name; or, unless a word's tag (not
    `takes_values`), a number that is no index (3.8, -1): a regression value, which `TextSplit.values` marks and
    the submission checks against the model."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if takes_values and (isinstance(value, float) and math.isfinite(value) or isinstance(value, int) and value < 0):
        return float(value)
    if isinstance(value, str) and 0 < len(value) <= MAX_NAME_CHARS:
        return value
    if isinstance(value, int) and value >= 0:  # booleans were made 0/1 above
        return value
    where = "an entry of 'label'" if in_list else "'label'"
    lists = "" if in_list else ", or a list of them for a multi-label model"
    values = ", or the number a regression head predicts" if takes_values else ""
    raise InvalidUpload(f"line {number}: {where} must be a class index (an integer >= 0) or a class name (a "
                        f"non-empty string of at most {MAX_NAME_CHARS} characters, as the model's config.json "
                        f"id2label names it){lists}{values}; got {json.dumps(value)[:40]}")


def manifest_splits(splits: dict[str, TextSplit]) -> tuple[dict[str, dict], dict[str, list[int]]]:
    """The manifest of a text dataset in the shape an `.npz` manifest has: per split, `text` (and `y`) with the
    number of rows as the shape. Labels by name are `y` of dtype "str" with the sorted class `names` (the
    submission checks them against the model's); `multi_label` marks lists (`list_width`: their one length, where
    they have one and are no flag vectors); `per_word` word tags; `values` (dtype "float32") regression values, of
    shape [rows, K] for lists of K values. `label_range` spans the class indices (of every list, for multi-label
    rows, and of every tag but -100), or the values."""
    described, label_range = {}, {}
    for name, rows in splits.items():
        arrays = {TEXT_INPUT: {"shape": [rows.rows], "dtype": "str", "characters": rows.characters}}
        if rows.paired:
            arrays[PAIR_INPUT] = {"shape": [rows.rows], "dtype": "str"}
        if rows.targeted:
            arrays[TARGET] = {"shape": [rows.rows], "dtype": "str"}
        if rows.choice_count:
            arrays[CHOICES] = {"shape": [rows.rows, rows.choice_count], "dtype": "str"}
        if rows.labelled:
            indices = rows.index_range()
            value_lists = rows.values and rows.list_width is not None
            labels = {"shape": [rows.labelled, rows.list_width] if value_lists else [rows.labelled],
                      "dtype": "str" if rows.names else "float32" if rows.values else "int64"}
            if rows.values:
                labels["values"] = True
                label_range[name] = rows.value_range()
            if rows.names:
                labels["names"] = sorted(rows.names)
            if rows.multi_label:
                labels["multi_label"] = True
            if rows.per_word:
                labels["per_word"] = True
            if rows.answers:
                labels["answers"] = True
            if rows.flag_width is not None:
                labels["flag_width"] = rows.flag_width
            elif rows.multi_label and rows.list_width is not None:
                labels["list_width"] = rows.list_width
            if rows.mixed_lists:
                labels["mixed_lists"] = True
            arrays[LABEL_ARRAY] = labels
            if indices:
                label_range[name] = indices
        described[name] = arrays
    return described, label_range
