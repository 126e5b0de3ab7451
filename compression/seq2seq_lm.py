"""Sequence-to-sequence models that write text for a text (task seq2seq-lm: T5, BART, Marian, Pegasus, mBART, ...;
translation and summarization), run through the ordinary `.pt2` pipeline like a causal LM.

Generation runs the decoder one token at a time, which no single exported forward does; what every method needs is
the forward that generation repeats: given the source and the output so far, the logits of the next token. The
program takes `input_ids` and `attention_mask` (the source) and `decoder_input_ids` (the output, shifted right
behind the decoder's start token) and returns the logits over the vocabulary at every output position. Its labels
are the output's tokens, so the job's accuracy is the share of output tokens the model predicts, and its
cross-entropy the model's perplexity on the output (teacher forcing, as transformers trains these models).

The output is the row's `target` where the dataset gives one (a reference translation or summary); where a split has
none, it is what the uploaded model itself writes, greedily (at most GENERATED_TOKENS tokens): then the upload
predicts every one of its own tokens and a compressed model's accuracy is the share of them it would write too, the
same fidelity a causal LM's top-1 agreement measures.
"""

from __future__ import annotations

import numpy as np
import torch

from compression.archive.errors import InvalidUpload
from compression.archive.jsonl import MAX_WRITTEN_ROWS, TOO_MANY_TO_WRITE, TextSplit
from compression.archive.npz import IGNORED_LABEL

DECODER_INPUT = "decoder_input_ids"
# An output's tokens: a target's at most (longer ones are cut), and what the upload writes where no target is given.
# The program's logits are [batch, output tokens, vocabulary] float32: 128 tokens of T5's 32k vocabulary take
# 16 MiB per row, which every evaluation batch and kept reference output holds.
MAX_TARGET_TOKENS = 128
GENERATED_TOKENS = 64
GENERATION_BATCH = 16
# The output axis is padded to at least 3 positions: torch.export fixes an axis of size 1 (a random or terse model
# that writes only its end token), and [batch, 2, vocabulary] logits with [batch, 2] labels read as a
# question-answering reader's start and end logits.
MIN_OUTPUT_TOKENS = 3


class Seq2SeqLogits(torch.nn.Module):
    """The encoder-decoder with the source's ids and mask and the decoder's input ids, and one output: the logits
    at every output position (without the key/value cache generation keeps). Holds the model as `model`, as
    `hf_program._TensorOutput` does, so the program's names are the folder's."""

    output = "logits"
    pooling = None

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                decoder_input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                          use_cache=False, return_dict=True).logits


def output_arrays(model: Seq2SeqLogits, tokenizer, splits: dict[str, TextSplit],
                  arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`<split>.decoder_input_ids` and `<split>.y` ([rows, output tokens], int64) for each split whose source
    `arrays` holds (`<split>.input_ids`, `<split>.attention_mask`): the labels are its targets' tokens, or the
    upload's own greedy output, IGNORED_LABEL after the end, and the decoder's input is what generation feeds the
    decoder before each of them; one length for every split (the program's shape)."""
    _check_start_token(model.model)
    outputs = {}  # split -> [(decoder input, labels)] per row
    for name, rows in splits.items():
        if not rows.targeted and rows.rows > MAX_WRITTEN_ROWS:  # (refused at submission too)
            raise InvalidUpload(TOO_MANY_TO_WRITE.format(split=name, rows=rows.rows))
        if rows.targeted:
            outputs[name] = [(shifted(model.model, labels), labels)
                             for labels in _target_tokens(tokenizer, rows.targets)]
        else:
            outputs[name] = _written_tokens(model.model, arrays[f"{name}.input_ids"],
                                            arrays[f"{name}.attention_mask"])
    length = max(MIN_OUTPUT_TOKENS, max(len(labels) for rows in outputs.values() for _, labels in rows))
    pad = _token(model.model, "pad_token_id") or 0
    out = {}
    for name, rows in outputs.items():
        decoder = np.full((len(rows), length), pad, np.int64)
        labels = np.full((len(rows), length), IGNORED_LABEL, np.int64)
        for index, (fed, expected) in enumerate(rows):
            decoder[index, :len(fed)], labels[index, :len(expected)] = fed, expected
        out[f"{name}.{DECODER_INPUT}"], out[f"{name}.y"] = decoder, labels
    return out


def _target_tokens(tokenizer, targets: list[str]) -> list[list[int]]:
    """The targets tokenized as the model's outputs (`text_target`: Marian's target vocabulary, the end token)."""
    encoded = tokenizer(text_target=targets, truncation=True, max_length=MAX_TARGET_TOKENS)
    return [list(ids) for ids in encoded["input_ids"]]


def _written_tokens(model: torch.nn.Module, input_ids: np.ndarray,
                    attention_mask: np.ndarray) -> list[tuple[list[int], list[int]]]:
    """What the upload writes for each source, greedily, as (what the decoder was fed, the tokens it wrote): its
    tokens after the decoder's start through its end token (or GENERATED_TOKENS of them), each fed back behind the
    start token. Greedy, so that the upload itself predicts each of them: its accuracy is 1 and a compressed model's
    the share of them it agrees on; the folder's generation settings hold otherwise (BART's forced first token, a
    minimum length)."""
    eos = _token(model, "eos_token_id")
    written, options = [], {}
    for start in range(0, len(input_ids), GENERATION_BATCH):
        ids = torch.from_numpy(input_ids[start:start + GENERATION_BATCH])
        mask = torch.from_numpy(attention_mask[start:start + GENERATION_BATCH])
        try:
            generated = _greedy(model, ids, mask, options)
        except IndexError as exc:
            if options or "list index out of range" not in str(exc):
                raise _not_written(model, exc) from exc
            # transformers sizes the key/value cache by the encoder's layer count: a T5 whose decoder has more
            # layers (num_decoder_layers, as T5-efficient checkpoints have) failed ("list index out of range");
            # without the cache each step recomputes the output so far, and gives the same tokens.
            options = {"use_cache": False}
            generated = _greedy(model, ids, mask, options)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the user's architecture raises in generate()
            raise _not_written(model, exc) from exc
        for row in generated.tolist():
            end = row.index(eos, 1) if eos in row[1:] else len(row) - 1
            written.append((row[:end], row[1:end + 1]))
    return written


def _check_start_token(model: torch.nn.Module) -> None:
    """The decoder's start token must be a row of its token table (a config copied from another checkpoint can name
    one past it: Marian's default 58100 in a smaller vocabulary), or generation fails inside an embedding lookup."""
    try:
        size = getattr(model.get_decoder().get_input_embeddings(), "num_embeddings", None)
    except (AttributeError, NotImplementedError):  # a decoder that does not say where its token table is
        return
    start = _token(model, "decoder_start_token_id")
    if isinstance(start, int) and isinstance(size, int) and not 0 <= start < size:
        raise ValueError(f"the folder's decoder start token {start} (decoder_start_token_id in config.json or "
                         f"generation_config.json) is not in the decoder's vocabulary of {size} tokens: every "
                         "output begins with it; fix it")


def _not_written(model: torch.nn.Module, exc: Exception) -> ValueError:
    first_line = (str(exc).strip().splitlines() or [""])[0][:300]
    return ValueError(f"this {model.config.model_type} model could not write its outputs with generate() "
                      f"({type(exc).__name__}: {first_line}), which a split without 'target' texts is measured "
                      "against; give its rows their targets")


def _greedy(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, options: dict) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=GENERATED_TOKENS, do_sample=False,
                              num_beams=1, num_return_sequences=1, **options)


def _token(model: torch.nn.Module, name: str) -> int | None:
    """A special token's id as generation reads it: the folder's generation_config.json, else config.json (where
    transformers 4 kept them); the first of a list."""
    value = getattr(model.generation_config, name, None)
    if value is None:
        value = getattr(model.config, name, None)
    return value[0] if isinstance(value, list) else value


def shifted(model: torch.nn.Module, labels: list[int]) -> list[int]:
    """The decoder's input for a target's `labels`: the labels shifted right behind the decoder's start token, as
    transformers builds it for training (`prepare_decoder_input_ids_from_labels`, where the class has it and its
    config names the start token: mBART moves its language token to the front)."""
    prepare = getattr(model, "prepare_decoder_input_ids_from_labels", None)
    if prepare is not None:
        try:
            return prepare(labels=torch.tensor([labels])).tolist()[0]
        except (AttributeError, TypeError, ValueError):  # the start token in generation_config.json alone
            pass
    start = _token(model, "decoder_start_token_id")
    if start is None:
        raise ValueError("the folder names no decoder start token (decoder_start_token_id in config.json or "
                         "generation_config.json), the token a seq2seq-lm model's output begins with; add it")
    return [start, *labels[:-1]]
