"""SQuAD-style scores of an extractive reader's answer spans: exact match and token-overlap F1.

A question-answering program outputs [N, 2, tokens] span logits (`compression.hf_program`) and its labels are the
answer's first and last token ([N, 2], IGNORED_LABEL where the row has no answer or truncation cut it off).
`accuracy` counts starts and ends found each on its own; a reader's users judge the span: the best span is the
(start, end) pair with start <= end, at most MAX_ANSWER_TOKENS long, whose start and end logits sum highest (as
transformers' question-answering pipeline picks it), and it scores "answer_exact_match" when it is the labelled
span, and "answer_f1" by the tokens the two share (precision and recall over tokens; SQuAD's own F1 counts
normalized words of the answer text, which a program of token ids does not hold).
"""

from __future__ import annotations

import torch

from compression.archive.npz import IGNORED_LABEL

MAX_ANSWER_TOKENS = 30  # transformers' question-answering pipeline's max_answer_len
ROWS_AT_ONCE = 16  # bounds the [rows, tokens, tokens] pair scores of long contexts


def is_span_output(output: torch.Tensor, labels: torch.Tensor) -> bool:
    """Span logits [N, 2, tokens] with a start and an end label per row."""
    return (output.dim() == 3 and output.shape[1] == 2 and labels.dim() == 2 and labels.shape[1] == 2
            and not labels.is_floating_point())


def best_spans(output: torch.Tensor) -> torch.Tensor:
    """[N, 2] the best (start, end) of each row of [N, 2, tokens] span logits."""
    tokens = output.shape[-1]
    allowed = torch.ones(tokens, tokens, dtype=torch.bool, device=output.device).triu()
    allowed &= ~torch.ones_like(allowed).triu(MAX_ANSWER_TOKENS)
    spans = []
    for rows in output.float().split(ROWS_AT_ONCE):
        scores = (rows[:, 0, :, None] + rows[:, 1, None, :]).masked_fill(~allowed, float("-inf"))
        flat = scores.reshape(len(rows), -1).argmax(-1)
        spans.append(torch.stack([flat // tokens, flat % tokens], -1))
    return torch.cat(spans) if spans else torch.zeros(0, 2, dtype=torch.long)


class SpanScore:
    """Exact match and token F1 of the best spans against the labelled ones, over the rows with an answer."""

    def __init__(self):
        self.rows = 0
        self.exact = self.f1 = 0.0

    def add(self, output: torch.Tensor, labels: torch.Tensor) -> None:
        answered = (labels != IGNORED_LABEL).all(-1)
        if not bool(answered.any()):
            return
        predicted, gold = best_spans(output[answered]), labels[answered].to(output.device)
        overlap = (torch.minimum(predicted[:, 1], gold[:, 1]) - torch.maximum(predicted[:, 0], gold[:, 0]) + 1)
        overlap = overlap.clamp(min=0).float()
        precision = overlap / (predicted[:, 1] - predicted[:, 0] + 1).float()
        recall = overlap / (gold[:, 1] - gold[:, 0] + 1).clamp(min=1).float()
        f1 = torch.where(overlap > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                         torch.zeros_like(overlap))
        self.rows += len(gold)
        self.exact += float((predicted == gold).all(-1).sum())
        self.f1 += float(f1.sum())

    def result(self) -> dict:
        return {"answer_exact_match": self.exact / self.rows, "answer_f1": self.f1 / self.rows} if self.rows else {}
