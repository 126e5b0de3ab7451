"""The benchmark's causal LM: no pretrained model ships on PyPI that we may use, so this trains a small
Llama-architecture model (6 decoder blocks, hidden 256, grouped-query attention, 4.4M parameters) with a byte-level
BPE tokenizer on the offline corpus of bench/llm/corpus.py, on a cosine schedule fitted to a time budget, until
its validation perplexity flattens or the budget ends, and caches the
Hugging Face folder (config, safetensors, tokenizer) on disk so later runs reuse it. `--architecture opt` trains
an OPT of the same width and depth instead (LayerNorm, ReLU MLP, learned positions: blocks that are not Llama's,
for AWQ's groups found in the block's forward).

    .venv/bin/python -m bench.llm.pretrained            # trains once (40 min budget), prints the folder
    .venv/bin/python -m bench.llm.pretrained --architecture opt --minutes 15
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from bench.llm import corpus

CACHE = Path(__file__).resolve().parents[1] / "results" / "cache" / "llm"
ARCHITECTURE = {"vocab_size": 2048, "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 6,
                "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 1024,
                "tie_word_embeddings": False, "rms_norm_eps": 1e-5}
# OPT's counterpart: the same width, depth, heads and MLP width (OPT has no grouped-query attention). Its
# embedding keeps the padding row at zero without gradient, so the pad is an id past the tokenizer's 2048.
OPT_ARCHITECTURE = {"vocab_size": 2049, "pad_token_id": 2048, "hidden_size": 256, "ffn_dim": 512,
                    "num_hidden_layers": 6, "num_attention_heads": 8, "max_position_embeddings": 1024,
                    "word_embed_proj_dim": 256, "do_layer_norm_before": True, "activation_function": "relu",
                    "tie_word_embeddings": False, "dropout": 0.0, "attention_dropout": 0.0}
ARCHITECTURES = ("llama", "opt")
TRAINING = {"seq_len": 256, "batch": 16, "lr": 2e-3, "warmup": 100, "max_steps": 3000, "eval_every": 100,
            "flat_below": 0.005, "max_minutes": 40, "seed": 0}


def train_tokenizer(text: str, folder: Path, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(text.split("\n\n"), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    fast.save_pretrained(folder)
    return fast


def _validation_loss(model, tokens: torch.Tensor, seq_len: int) -> float:
    windows = tokens[: len(tokens) // seq_len * seq_len].view(-1, seq_len)[:32]
    with torch.no_grad():
        return float(model(input_ids=windows, labels=windows).loss)


def _new_model(architecture: str, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    if architecture == "opt":
        return OPTForCausalLM(OPTConfig(**OPT_ARCHITECTURE, **ids))
    return LlamaForCausalLM(LlamaConfig(**ARCHITECTURE, **ids))


def train(folder: Path, minutes: float, architecture: str = "llama") -> dict:

    torch.manual_seed(TRAINING["seed"])
    train_text, test_text = corpus.split()
    tokenizer = train_tokenizer(train_text, folder, ARCHITECTURE["vocab_size"])
    train_tokens = torch.tensor(tokenizer(train_text)["input_ids"])
    val_tokens = torch.tensor(tokenizer(test_text)["input_ids"])
    model = _new_model(architecture, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAINING["lr"], weight_decay=0.1, betas=(0.9, 0.95))
    steps, seq_len, batch = TRAINING["max_steps"], TRAINING["seq_len"], TRAINING["batch"]
    started, history, step = time.monotonic(), [], 0

    def progress() -> float:
        """Fraction of the run done: of the steps or of the time budget, whichever runs out first, so the
        cosine schedule ends at zero however busy the shared cores are."""
        return max(step / steps, (time.monotonic() - started) / (minutes * 60))

    def learning_rate(_) -> float:
        return min(1.0, (step + 1) / TRAINING["warmup"]) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress())))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate)
    generator = torch.Generator().manual_seed(TRAINING["seed"])
    while progress() < 1:
        step += 1
        starts = torch.randint(0, len(train_tokens) - seq_len - 1, (batch,), generator=generator)
        x = torch.stack([train_tokens[s: s + seq_len] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step % TRAINING["eval_every"] == 0:
            history.append(_validation_loss(model, val_tokens, seq_len))
            elapsed = time.monotonic() - started
            print(f"step {step} train {loss.item():.3f} val {history[-1]:.3f} ({elapsed:.0f} s)", flush=True)
            # flat: the last two evaluations improved the loss by less than `flat_below` (relative) in total
            if len(history) >= 3 and (history[-3] - history[-1]) / history[-3] < TRAINING["flat_below"]:
                break
    model.save_pretrained(folder)
    summary = {"steps": step, "val_loss": history, "train_tokens": len(train_tokens), "val_tokens": len(val_tokens),
               "parameters": sum(p.numel() for p in model.parameters()), "seconds": time.monotonic() - started,
               "training": TRAINING}
    (folder / "training.json").write_text(json.dumps(summary, indent=2))
    return summary


def model_dir(minutes: float = TRAINING["max_minutes"], architecture: str = "llama") -> Path:
    """The cached trained model folder, training it first if it is not there yet."""
    folder = CACHE / f"{architecture}-6x256"
    if not (folder / "training.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        train(folder, minutes, architecture)
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=TRAINING["max_minutes"])
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="llama")
    arguments = parser.parse_args()
    print(model_dir(arguments.minutes, arguments.architecture))
