"""The answer of a `.jsonl` row for an extractive question-answering model: where in the context (`text_pair`) the
answer lies, as characters, given as `"answer": {"text": "Paris", "start": 42}` or in SQuAD's form,
`"answers": {"text": ["Paris"], "answer_start": [42]}` (the first answer is read; empty lists: no answer in the
context). The worker turns it into the start and end tokens (`compression.hf_program.answer_positions`)."""

from __future__ import annotations

from compression.archive.errors import InvalidUpload

ANSWER_KEYS = ("answer", "answers")


def row_answer(row: dict, context: str | None, number: int) -> tuple[int, int] | None:
    """The answer's character span [start, end) in `context`, or None for a row SQuAD marks unanswerable."""
    if context is None:
        raise InvalidUpload(f"line {number}: an answer lies in the context, the row's 'text_pair' (the question is "
                            "'text'); give both")
    if "answer" in row and "answers" in row:
        raise InvalidUpload(f"line {number}: give 'answer' or SQuAD's 'answers', not both")
    if "answer" in row:
        answer = row["answer"]
        if not isinstance(answer, dict) or set(answer) != {"text", "start"}:
            raise InvalidUpload(f"line {number}: 'answer' must be {{\"text\": ..., \"start\": ...}}, the answer and "
                                "the character where it starts in 'text_pair'")
        text, start = answer["text"], answer["start"]
    else:
        answers = row["answers"]
        if not isinstance(answers, dict) or not {"text", "answer_start"} <= set(answers) or not all(
                isinstance(answers[key], list) for key in ("text", "answer_start")):
            raise InvalidUpload(f"line {number}: 'answers' must be SQuAD's {{\"text\": [...], \"answer_start\": "
                                "[...]}}")
        if not answers["text"] or not answers["answer_start"]:
            return None
        text, start = answers["text"][0], answers["answer_start"][0]
    if not isinstance(text, str) or not text or isinstance(start, bool) or not isinstance(start, int):
        raise InvalidUpload(f"line {number}: an answer is a non-empty 'text' and the integer 'start' of it in "
                            "'text_pair'")
    if context[start:start + len(text)] != text:
        raise InvalidUpload(f"line {number}: the answer {text[:40]!r} is not at character {start} of 'text_pair' "
                            f"(found {context[start:start + len(text)][:40]!r}); give the character where it starts")
    return start, start + len(text)
