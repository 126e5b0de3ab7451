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
from compression.archive.hf_architectures import DECODER_INPUT
from compression.archive.jsonl import MAX_WRITTEN_ROWS, TOO_MANY_TO_WRITE, TextSplit
from compression.archive.npz import IGNORED_LABEL

# An output's tokens: a target's at most (longer ones are cut), and what the upload writes where no target is given.
# The program's logits are [batch, output tokens, vocabulary] float32: 128 tokens of T5's 32k vocabulary take
# 16 MiB per row, which every evaluation batch and kept reference output holds.
MAX_TARGET_TOKENS = 128
GENERATED_TOKENS = 64
GENERATION_BATCH = 16
# What a decoder is fed before the tokens it writes, at most: the start token, and Whisper's language, task and
# no-timestamps tokens.
OUTPUT_PROMPT_TOKENS = 4
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


def text_output_arrays(model: Seq2SeqLogits, tokenizer, splits: dict[str, TextSplit],
                       arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`output_arrays` of a seq2seq-lm job's text: each split's targets where its rows give them, the source its
    tokenized `arrays` hold (`<split>.input_ids`, `<split>.attention_mask`)."""
    return output_arrays(model.model, tokenizer,
                         {name: rows.targets if rows.targeted else None for name, rows in splits.items()},
                         {name: {key: arrays[f"{name}.{key}"] for key in ("input_ids", "attention_mask")}
                          for name in splits}, TOO_MANY_TO_WRITE)


def output_arrays(model: torch.nn.Module, tokenizer, targets: dict[str, list[str] | None],
                  sources: dict[str, dict[str, np.ndarray]], too_many: str,
                  prompted: bool = False) -> dict[str, np.ndarray]:
    """`<split>.decoder_input_ids` and `<split>.y` ([rows, output tokens], int64) for each split of `targets`
    (split -> its reference texts, None where it has none) whose encoder inputs `sources` holds (split -> input
    name -> [rows, ...]): the labels are the targets' tokens, or the upload's (`model`, a transformers
    encoder-decoder) own greedy output, IGNORED_LABEL after the end, and the decoder's input is what generation
    feeds the decoder before each of them; one length for every split (the program's shape). `too_many`: the
    refusal of an untargeted split of more than MAX_WRITTEN_ROWS rows (format fields split and rows). `prompted`:
    where the folder's generation settings feed the decoder tokens before the text (Whisper's language, task and
    no-timestamps tokens), the targets follow that prompt (`_after_prompts`)."""
    _check_start_token(model)
    outputs = {}  # split -> [(decoder input, labels)] per row
    for name, texts in targets.items():
        if texts is not None and prompted and max(map(len, prompts := _generation_prompts(model, sources[name]))) > 1:
            outputs[name] = _after_prompts(model, tokenizer, texts, prompts)
            continue
        if texts is not None:
            outputs[name] = [(shifted(model, labels), labels) for labels in _target_tokens(model, tokenizer, texts)]
            continue
        rows = len(next(iter(sources[name].values())))
        if rows > MAX_WRITTEN_ROWS:  # (refused at submission too)
            raise InvalidUpload(too_many.format(split=name, rows=rows))
        outputs[name] = _written_tokens(model, sources[name])
    length = max(MIN_OUTPUT_TOKENS, max(len(labels) for rows in outputs.values() for _, labels in rows))
    pad = _token(model, "pad_token_id") or 0
    out = {}
    for name, rows in outputs.items():
        decoder = np.full((len(rows), length), pad, np.int64)
        labels = np.full((len(rows), length), IGNORED_LABEL, np.int64)
        for index, (fed, expected) in enumerate(rows):
            decoder[index, :len(fed)], labels[index, :len(expected)] = fed, expected
        out[f"{name}.{DECODER_INPUT}"], out[f"{name}.y"] = decoder, labels
    return out


def _generation_prompts(model: torch.nn.Module, sources: dict[str, np.ndarray]) -> list[list[int]]:
    """What generate() feeds the decoder before the first token it writes, per row of the split: the start token,
    and where the folder's settings say so more (Whisper: the language it detects in that row, its task, no
    timestamps)."""
    prompts = []
    rows = len(next(iter(sources.values())))
    for start in range(0, rows, GENERATION_BATCH):
        batch = {name: torch.from_numpy(values[start:start + GENERATION_BATCH]) for name, values in sources.items()}
        try:
            prompts += _greedy(model, batch, {}, new_tokens=1)[:, :-1].tolist()
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the user's architecture raises in generate()
            raise _not_written(model, exc) from exc
    return prompts


def _after_prompts(model: torch.nn.Module, tokenizer, texts: list[str],
                   prompts: list[list[int]]) -> list[tuple[list[int], list[int]]]:
    """(decoder input, labels) of each target text read after generation's prompt for its row, not after the
    tokenizer's own special tokens: a multilingual Whisper's tokenizer, saved without a language, begins a text with
    <|startoftranscript|><|notimestamps|>, a prefix generation never feeds the model (it detects the language and
    feeds <|startoftranscript|><|en|><|transcribe|><|notimestamps|>): read after it, every model read the reference
    from a position it is never in when it transcribes. The prompt's tokens are given, not scored; the text's and
    the end token are."""
    most = _most_tokens(model, MAX_TARGET_TOKENS) - max(map(len, prompts))
    encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max(1, most))["input_ids"]
    end = _token(model, "eos_token_id")
    rows = []
    for prompt, ids in zip(prompts, encoded):
        written = [*ids, end]
        rows.append(([*prompt, *written[:-1]], [IGNORED_LABEL] * (len(prompt) - 1) + written))
    return rows


def _target_tokens(model: torch.nn.Module, tokenizer, targets: list[str]) -> list[list[int]]:
    """The targets tokenized as the model's outputs (`text_target`: Marian's target vocabulary, the end token),
    without a leading decoder start token, which the decoder is fed and never predicts (Whisper's tokenizer begins
    every text with its <|startoftranscript|>; transformers' speech fine-tuning recipe drops it so)."""
    encoded = tokenizer(text_target=targets, truncation=True, max_length=_most_tokens(model, MAX_TARGET_TOKENS))
    start = _token(model, "decoder_start_token_id")
    return [list(ids[1:] if len(ids) > 1 and ids[0] == start else ids) for ids in encoded["input_ids"]]


def _written_tokens(model: torch.nn.Module, sources: dict[str, np.ndarray]) -> list[tuple[list[int], list[int]]]:
    """What the upload writes for each source (the encoder's inputs by name), greedily, as (what the decoder was
    fed, the tokens it wrote): its tokens after the decoder's start through its end token (or GENERATED_TOKENS of
    them), each fed back behind the start token. Greedy, so that the upload itself predicts each of them: its
    accuracy is 1 and a compressed model's the share of them it agrees on. The folder's generation settings hold
    otherwise (BART's forced first token, Whisper's language and task tokens, a minimum length, suppressed
    tokens): where they, not the model, chose a token, the upload's own prediction differs from it, and the
    position is not scored (IGNORED_LABEL): generation would choose it so for the compressed model too."""
    eos = _token(model, "eos_token_id")
    written, options = [], {}
    rows = len(next(iter(sources.values())))
    for start in range(0, rows, GENERATION_BATCH):
        batch = {name: torch.from_numpy(values[start:start + GENERATION_BATCH]) for name, values in sources.items()}
        try:
            generated = _greedy(model, batch, options)
        except IndexError as exc:
            if options or "list index out of range" not in str(exc):
                raise _not_written(model, exc) from exc
            # transformers sizes the key/value cache by the encoder's layer count: a T5 whose decoder has more
            # layers (num_decoder_layers, as T5-efficient checkpoints have) failed ("list index out of range");
            # without the cache each step recomputes the output so far, and gives the same tokens.
            options = {"use_cache": False}
            generated = _greedy(model, batch, options)
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the user's architecture raises in generate()
            raise _not_written(model, exc) from exc
        chosen = _own_choices(model, batch, generated)
        for row, own in zip(generated.tolist(), chosen.tolist()):
            end = row.index(eos, 1) if eos in row[1:] else len(row) - 1
            labels = [token if token == predicted else IGNORED_LABEL
                      for token, predicted in zip(row[1:end + 1], own[:end])]
            written.append((row[:end], labels))
    return written


def _own_choices(model: torch.nn.Module, batch: dict[str, torch.Tensor], generated: torch.Tensor) -> torch.Tensor:
    """[rows, tokens - 1]: the token the model itself ranks first after each prefix of `generated` (teacher
    forcing), which generation's settings may have overridden."""
    with torch.no_grad():
        logits = model(**batch, decoder_input_ids=generated[:, :-1], use_cache=False, return_dict=True).logits
    return logits.argmax(-1)


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
                      f"({type(exc).__name__}: {first_line}), which a split without reference outputs is measured "
                      "against; give its rows theirs ('target' texts in the .jsonl; an audio split's "
                      "'<split>.transcript')")


def _greedy(model: torch.nn.Module, batch: dict[str, torch.Tensor], options: dict,
            new_tokens: int = GENERATED_TOKENS) -> torch.Tensor:
    """[rows, tokens]: the decoder's start token and what generate() wrote after it (the output as a dict: Whisper's
    generate() returns its text alone, without the start and the forced tokens, unless asked for the dict)."""
    with torch.no_grad():
        return model.generate(**batch, max_new_tokens=_most_tokens(model, new_tokens), do_sample=False,
                              num_beams=1,
                              num_return_sequences=1, return_dict_in_generate=True, **options).sequences


def _most_tokens(model: torch.nn.Module, wanted: int) -> int:
    """`wanted` output tokens, fewer where the decoder's position table is shorter (Whisper's and Speech2Text's
    `max_target_positions`), less the start token and a prompt's language and task tokens (generate() refuses
    more)."""
    positions = getattr(model.config, "max_target_positions", None)
    return min(wanted, positions - OUTPUT_PROMPT_TOKENS) if type(positions) is int and positions > 2 * \
        OUTPUT_PROMPT_TOKENS else wanted


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
