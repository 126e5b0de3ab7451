"""Exact match and token F1 of an extractive reader's best answer spans (`compression.answer_spans`)."""

import pytest
import torch

from compression.answer_spans import MAX_ANSWER_TOKENS, SpanScore, best_spans
from compression.labels import LabelScore


def _logits(starts: list[int], ends: list[int], tokens: int = 40) -> torch.Tensor:
    output = torch.zeros(len(starts), 2, tokens)
    for row, (start, end) in enumerate(zip(starts, ends)):
        output[row, 0, start] = output[row, 1, end] = 5.0
    return output


def test_the_best_span_starts_before_it_ends_and_is_not_too_long():
    output = _logits([3], [7])
    output[0, 1, 1] = 6.0  # a higher end logit before the start
    output[0, 1, 3 + MAX_ANSWER_TOKENS] = 9.0  # and one further than an answer reaches
    assert best_spans(output).tolist() == [[3, 7]]


def test_exact_match_and_f1_count_shared_tokens_over_answered_rows():
    score = SpanScore()
    # exact; 2 of 4 predicted tokens in a 2-token answer (precision 1/2, recall 1, F1 2/3); disjoint; no answer
    score.add(_logits([3, 10, 20, 5], [5, 13, 21, 5]),
              torch.tensor([[3, 5], [12, 13], [30, 31], [-100, -100]]))
    result = score.result()
    assert result["answer_exact_match"] == pytest.approx(1 / 3)
    assert result["answer_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_span_labels_add_the_answer_scores_to_accuracy_and_other_labels_do_not():
    spans = LabelScore("logits")
    spans.add(_logits([3], [5]), torch.tensor([[3, 5]]))
    result = spans.result()
    assert (result["accuracy"], result["answer_exact_match"], result["answer_f1"]) == (1.0, 1.0, 1.0)
    tags = LabelScore("logits")  # a token classifier: [N, tokens, classes] against a class per token
    tags.add(torch.randn(2, 6, 5), torch.tensor([[0, 1, 2, 3, 4, -100], [1, 1, 1, 1, 1, 1]]))
    assert set(tags.result()) == {"accuracy", "perplexity"}
