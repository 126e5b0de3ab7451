import json
import math

import pytest
import torch

from compression.llm.evaluate import generation_speed, multiple_choice_accuracy, perplexity, read_multiple_choice
from compression.llm.text import calibration_windows
from tests.compression.llm.conftest import tiny_llama


def _reference_nll(model, tokens, first, last, context_length):
    """-log p(token t | the context_length - 1 tokens before it, at most), summed over t in [first, last)."""
    total = 0.0
    with torch.no_grad():
        for t in range(first, last):
            start = max(0, t - context_length + 1)
            logits = model(input_ids=tokens[start:t].unsqueeze(0)).logits[0, -1]
            total -= float(torch.log_softmax(logits, dim=-1)[tokens[t]])
    return total


@pytest.mark.parametrize("stride,used", [(4, 4), (None, 8), (16, 15)])
def test_sliding_window_perplexity_scores_every_token_once_with_its_window_context(stride, used):
    model = tiny_llama()
    tokens = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(1))
    result = perplexity(model, tokens, context_length=16, stride=stride, batch_size=3)
    assert result["tokens"] == 39 and result["stride"] == used
    # window k starts at k * stride and scores the tokens after the previous window's end, one at a time here
    want, last_end = 0.0, 0
    for begin in range(0, 40, used):
        end = min(begin + 16, 40)
        want += _reference_nll(model, tokens[begin:end], max(last_end, begin + 1) - begin, end - begin, 16)
        last_end = end
        if end == 40:
            break
    assert math.log(result["perplexity"]) == pytest.approx(want / 39, rel=1e-4)


def test_perplexity_is_scored_without_a_generation_cache():
    """Scoring needs no cache, and some models cannot build one: a hybrid whose layers are all linear attention
    (Bailing-hybrid and Kimi-Linear with few layers) fails in transformers' cache ("`get_mask_sizes` can only be
    called on Attention layers"); llm_ptq reported that as a model that cannot compute logits from text."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("bailing_hybrid", vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                                  layer_types=["linear_attention"] * 2, linear_num_heads=4, linear_head_dim=8,
                                  num_experts=4, num_experts_per_token=2, moe_intermediate_size=16,
                                  num_expert_group=1, topk_group=1, mlp_layer_types=["dense"] * 2, pad_token_id=0,
                                  eos_token_id=1, bos_token_id=1)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    tokens = torch.randint(0, 64, (24,), generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="get_mask_sizes"):
        model(input_ids=tokens[None, :8])  # the cache transformers builds by default
    result = perplexity(model, tokens, context_length=16)
    assert result["tokens"] == 23 and math.isfinite(result["perplexity"])


class _CountingTokenizer:
    """Each character is a token (its code point modulo 256)."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) % 256 for c in text]}


def test_multiple_choice_picks_the_choice_with_the_highest_log_likelihood(tmp_path):
    model = tiny_llama()
    tokenizer = _CountingTokenizer()
    question = "q?"
    choices = ["ab", "cd", "efgh"]
    scores = []
    with torch.no_grad():
        for choice in choices:
            ids = tokenizer(question)["input_ids"] + tokenizer(" " + choice)["input_ids"]
            log_probs = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0], dim=-1)
            scores.append(sum(float(log_probs[i - 1, ids[i]]) for i in range(2, len(ids))))
    best = max(range(3), key=scores.__getitem__)
    rows = [{"question": question, "choices": choices, "answer": best},
            {"question": question, "choices": choices, "answer": (best + 1) % 3}]
    path = tmp_path / "mc.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    result = multiple_choice_accuracy(model, tokenizer, read_multiple_choice(path))
    assert result["accuracy"] == 0.5 and result["questions"] == 2


@pytest.mark.parametrize("line,message", [
    ('{"question": "q", "choices": ["a"], "answer": 0}', "choices"),
    ('{"question": "q", "choices": ["a", "b"], "answer": 2}', "answer"),
    ('{"question": "q", "choices": ["a", "b"], "answer": "c"}', "not one of the choices"),
])
def test_malformed_multiple_choice_rows_name_the_line(tmp_path, line, message):
    path = tmp_path / "mc.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": "b"}\n' + line + "\n")
    with pytest.raises(ValueError, match=f"mc.jsonl:2: .*{message}"):
        read_multiple_choice(path)


def test_generation_speed_generates_the_requested_tokens():
    result = generation_speed(tiny_llama(), torch.randint(0, 256, (1, 8)), new_tokens=5, repeats=1)
    assert result["new_tokens"] == 5 and result["tokens_per_s"] > 0 and result["prefill_ms"] > 0


def test_calibration_windows_are_distinct_slices_of_the_stream():
    tokens = torch.arange(1000)
    windows = calibration_windows(tokens, samples=8, sequence_length=64, seed=3)
    assert windows.shape == (8, 64)
    assert all(torch.equal(row, torch.arange(int(row[0]), int(row[0]) + 64)) for row in windows)
    assert len({int(row[0]) for row in windows}) == 8
    assert calibration_windows(torch.arange(10), 4, 64).shape == (1, 10)  # a short stream: one short window
    with pytest.raises(ValueError):
        calibration_windows(torch.arange(1), 4, 64)


def test_evaluate_llm_follows_the_evaluation_spec(tmp_path):
    from compression.llm.evaluate import evaluate_llm
    from compression.specs.llm import LLMEvaluationSpec

    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps({"question": "ab", "choices": ["c", "d"], "answer": 0}) + "\n")
    tokens = torch.randint(0, 256, (60,), generator=torch.Generator().manual_seed(2))
    spec = LLMEvaluationSpec(context_length=16, stride=8, generation_tokens=3)
    metrics = evaluate_llm(tiny_llama(), spec, tokens, _CountingTokenizer(), path)
    assert metrics["tokens"] == 59 and metrics["stride"] == 8 and metrics["questions"] == 1
    assert metrics["new_tokens"] == 3 and metrics["prompt_tokens"] == 8
    assert "new_tokens" not in evaluate_llm(tiny_llama(), LLMEvaluationSpec(context_length=16, generation_tokens=0),
                                            tokens)
    with pytest.raises(ValueError, match="tokenizer"):
        evaluate_llm(tiny_llama(), spec, tokens, None, path)
