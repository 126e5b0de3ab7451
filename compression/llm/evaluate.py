"""Evaluate a causal LM: perplexity with a sliding window, multiple-choice accuracy by log-likelihood, and greedy
generation speed.

Speed: transformers runs compressed-tensors int4/int8 folders by decompressing the weights to the model dtype
(there is no packed-int CPU kernel in that path), so on CPU a quantized folder generates at the speed of the
unquantized model; the kernels that make these formats faster (Marlin/Machete for int4/int8 weight-only, FP8
Marlin or native FP8 GEMMs) are vLLM's, on CUDA GPUs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch


def load_quantized(folder: str | Path, dtype: torch.dtype | None = None):
    """A compressed-tensors folder as a transformers model (an asymmetric one with its weights decompressed:
    `compression.formats.hf_folder.loading_options`)."""
    from compression.causal_lm_class import AutoCausalLM
    from compression.formats.hf_folder import loading_options

    kwargs = loading_options(folder)
    if dtype is not None:
        kwargs["dtype"] = dtype
    return AutoCausalLM.from_pretrained(folder, **kwargs).eval()


@torch.no_grad()
def perplexity(model, tokens: torch.Tensor, context_length: int = 512, stride: int | None = None,
               max_tokens: int | None = None, batch_size: int = 4) -> dict:
    """exp(mean NLL) over a 1-D token stream. Windows of `context_length` start every `stride` tokens; each
    scores only the tokens not scored by an earlier window, so every token after the first is scored exactly once,
    with at least `context_length - stride` tokens of context (except in the first window). The stride is capped
    at `context_length - 1`: windows must overlap by a token for each window's first token to have a context."""
    stride = min(stride or max(1, context_length // 2), context_length - 1)
    tokens = tokens[:max_tokens] if max_tokens else tokens
    windows, last_end = [], 0
    for begin in range(0, max(1, len(tokens) - 1), stride):
        end = min(begin + context_length, len(tokens))
        windows.append((begin, end, max(last_end, begin + 1) - begin))  # the window's first new target
        last_end = end
        if end == len(tokens):
            break
    nll, count = 0.0, 0
    for first in range(0, len(windows), batch_size):
        by_length: dict[int, list] = {}
        for window in windows[first: first + batch_size]:
            by_length.setdefault(window[1] - window[0], []).append(window)
        for same_length in by_length.values():
            ids = torch.stack([tokens[begin:end] for begin, end, _ in same_length])
            log_probs = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[:, :-1].float(), dim=-1)
            target_log_probs = log_probs.gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2)
            for row, (_, _, first_target) in enumerate(same_length):
                values = target_log_probs[row, first_target - 1:]
                nll -= float(values.sum())
                count += values.numel()
    return {"perplexity": math.exp(nll / count), "tokens": count, "context_length": context_length,
            "stride": stride}


def read_multiple_choice(path: str | Path) -> list[dict]:
    """Rows of a `.jsonl` file: {"question": str, "choices": [str, ...], "answer": index or the choice text}."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("question"), str) or not isinstance(row.get("choices"), list) \
                or len(row["choices"]) < 2:
            raise ValueError(f"{path}:{number}: needs a 'question' string and a 'choices' list of 2 or more")
        answer = row.get("answer")
        if isinstance(answer, str):
            if answer not in row["choices"]:
                raise ValueError(f"{path}:{number}: answer {answer!r} is not one of the choices")
            answer = row["choices"].index(answer)
        if not isinstance(answer, int) or not 0 <= answer < len(row["choices"]):
            raise ValueError(f"{path}:{number}: 'answer' must be a choice index or a choice's text")
        rows.append({"question": row["question"], "choices": row["choices"], "answer": answer})
    return rows


@torch.no_grad()
def multiple_choice_accuracy(model, tokenizer, rows: list[dict]) -> dict:
    """Picks the choice whose tokens have the highest log-likelihood after the question (`accuracy`), or the
    highest per character of the choice (`accuracy_norm`, which does not favour short answers)."""
    correct = correct_norm = 0
    for row in rows:
        context = tokenizer(row["question"], add_special_tokens=False)["input_ids"]
        scores, normalised = [], []
        for choice in row["choices"]:
            continuation = tokenizer(" " + choice, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([context + continuation])
            log_probs = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[0, :-1].float(), dim=-1)
            targets = ids[0, len(context):]
            score = float(log_probs[len(context) - 1:].gather(1, targets.unsqueeze(1)).sum())
            scores.append(score)
            normalised.append(score / max(1, len(choice)))
        correct += int(max(range(len(scores)), key=scores.__getitem__) == row["answer"])
        correct_norm += int(max(range(len(normalised)), key=normalised.__getitem__) == row["answer"])
    return {"accuracy": correct / len(rows), "accuracy_norm": correct_norm / len(rows), "questions": len(rows)}


@torch.no_grad()
def generation_speed(model, prompt: torch.Tensor, new_tokens: int = 64, repeats: int = 3) -> dict:
    """Greedy decoding of `new_tokens` after `prompt` [1, n] with the KV cache; best of `repeats` runs."""
    best_prefill = best_total = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        model(input_ids=prompt, use_cache=True)
        prefill = time.perf_counter() - started
        started = time.perf_counter()
        model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                       pad_token_id=model.config.get_text_config().eos_token_id)
        best_prefill, best_total = min(best_prefill, prefill), min(best_total, time.perf_counter() - started)
    return {"prefill_ms": round(best_prefill * 1000, 2), "generate_s": round(best_total, 4),
            "tokens_per_s": round(new_tokens / best_total, 1), "prompt_tokens": prompt.shape[1],
            "new_tokens": new_tokens}


def evaluate_llm(model, spec, tokens: torch.Tensor, tokenizer=None, multiple_choice: str | Path | None = None) -> dict:
    """The metrics an `LLMEvaluationSpec` asks for: perplexity on `tokens` (a 1-D stream), accuracy on a
    multiple-choice `.jsonl` when given (needs the tokenizer), and generation speed from the stream's first
    tokens."""
    metrics = perplexity(model, tokens, spec.context_length, spec.stride, spec.max_tokens)
    if multiple_choice is not None:
        if tokenizer is None:
            raise ValueError("multiple-choice accuracy needs the model's tokenizer")
        metrics.update(multiple_choice_accuracy(model, tokenizer, read_multiple_choice(multiple_choice)))
    if spec.generation_tokens:
        prompt = tokens[: min(len(tokens), spec.context_length // 2)].unsqueeze(0)
        metrics.update(generation_speed(model, prompt, spec.generation_tokens))
    return metrics
