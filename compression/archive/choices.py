"""The choices of a `.jsonl` row for a multiple-choice model (task multiple-choice: `BertForMultipleChoice`, SWAG's,
RACE's and ARC's form): `"text"` is the context or question, `"choices"` the candidate answers or endings, each of
which the worker pairs with the text as the tokenizer joins a sentence pair, and `"label"` (optional) the index of
the right choice or its text. The model scores every (text, choice) pair and picks the best: its output is one
logit per choice. Every row of a file gives the same number of choices: the exported program takes
[batch, choices, tokens]."""

from __future__ import annotations

import json

from compression.archive.errors import InvalidUpload

CHOICES = "choices"
# SWAG, HellaSwag, RACE and MMLU give 4 choices, ARC up to 5, COPA 2: 16 leaves room and bounds the tokens a row
# asks for (each choice is a row of the model's input).
MAX_CHOICES = 16
MAX_CHOICE_CHARS = 10_000
# Checked at submission (app.jobs.validation) and again by the worker (compression.hf_program).
CHOICES_NEED_MULTIPLE_CHOICE = ("rows give 'choices', the candidate answers a multiple-choice model (task "
                                "multiple-choice: BertForMultipleChoice, ...) scores; this model is not one: remove "
                                "'choices', or upload a checkpoint saved with a multiple-choice head")
MULTIPLE_CHOICE_NEEDS_CHOICES = ("a multiple-choice model scores candidate answers: give every row 'choices' (a list "
                                 "of 2 or more texts, each paired with 'text') and, where known, 'label' (the index "
                                 "of the right choice, or its text)")


def row_choices(row: dict, number: int) -> list[str]:
    """A row's choices: 2..MAX_CHOICES non-empty strings."""
    choices = row[CHOICES]
    if not isinstance(choices, list) or not 2 <= len(choices) <= MAX_CHOICES or not all(
            isinstance(choice, str) and 0 < len(choice) <= MAX_CHOICE_CHARS for choice in choices):
        raise InvalidUpload(f"line {number}: 'choices' must be a list of 2 to {MAX_CHOICES} non-empty strings (at "
                            f"most {MAX_CHOICE_CHARS:,} characters each), the candidates a multiple-choice model "
                            "scores after 'text'")
    return choices


def choice_label(label, choices: list[str], number: int) -> int:
    """The index of a multiple-choice row's right choice: `label` is that index, or the choice's text."""
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    if isinstance(label, str) and label in choices:
        return choices.index(label)
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(choices):
        return label
    raise InvalidUpload(f"line {number}: 'label' must be the index of the right choice (0..{len(choices) - 1}) or "
                        f"the text of one of the row's 'choices'; got {json.dumps(label)[:40]}")
