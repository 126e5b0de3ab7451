"""Issue 13 benchmark: weight-only quantization of a causal LM through `compression.llm.apply_llm_ptq`.

The model is bench/llm/pretrained.py's Llama (trained here on text that ships with Python; no pretrained LM
ships on PyPI that we could use). Every quantized row streams the model's folder block by block, in a fresh process
of its own so its peak RSS is its own; the written folder is then loaded with transformers (compressed-tensors)
and evaluated: perplexity on the held-out split (sliding window, stated context and stride), accuracy on a
multiple-choice cloze set built from that split (true continuation vs three continuations from elsewhere), and
greedy generation speed on CPU. A last row quantizes a larger random Llama (16 blocks) to show that calibration
memory is bounded by one block.

    .venv/bin/python -m bench.llm.run --quick     # 32 calibration windows, 20k test tokens
    .venv/bin/python -m bench.llm.run             # 128 calibration windows, the whole test split
    .venv/bin/python -m bench.llm.run --row memory   # the memory row alone (prints its JSON)
    .venv/bin/python -m bench.llm.run --quick --architecture opt --rows fp32,rtn_int4_g128,gptq_int4_g128,awq_int4_g128

Rows run with OMP_NUM_THREADS=1 unless it is set.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.llm import corpus, pretrained
from compression.context import RunContext
from compression.llm import apply_llm_ptq
from compression.llm.evaluate import (
    generation_speed,
    load_quantized,
    multiple_choice_accuracy,
    perplexity,
    read_multiple_choice,
)
from compression.llm.export import folder_bytes
from compression.llm.text import calibration_windows, load_tokenizer, tokenize
from compression.specs.llm import LLMPTQSpec

RESULTS = Path(__file__).resolve().parents[1] / "results"
WORK = RESULTS / "cache" / "llm" / "runs"
ROWS = {
    "rtn_int8": {"algorithm": "rtn", "bits": 8, "group_size": None},
    "fp8": {"algorithm": "rtn", "weights": "fp8", "group_size": None},
    "rtn_int4_g128": {"algorithm": "rtn", "bits": 4, "group_size": 128},
    "gptq_int4_g128": {"algorithm": "gptq", "bits": 4, "group_size": 128},
    "awq_int4_g128": {"algorithm": "awq", "bits": 4, "group_size": 128},
    "hqq_int4_g128": {"algorithm": "hqq", "bits": 4, "group_size": 128},
    "rtn_int3_g128": {"algorithm": "rtn", "bits": 3, "group_size": 128},
    "gptq_int3_g128": {"algorithm": "gptq", "bits": 3, "group_size": 128},
    "awq_int3_g128": {"algorithm": "awq", "bits": 3, "group_size": 128},
}
SETTINGS = {True: {"samples": 32, "sequence_length": 256, "test_tokens": 20_000, "questions": 100},
            False: {"samples": 128, "sequence_length": 256, "test_tokens": None, "questions": 300}}
CONTEXT, STRIDE = 256, 128
MEMORY_MODEL = {"vocab_size": 4096, "hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 16,
                "num_attention_heads": 12, "num_key_value_heads": 3, "max_position_embeddings": 1024,
                "tie_word_embeddings": False}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def multiple_choice_file(test_text: str, questions: int, seed: int = 0) -> Path:
    """Cloze questions from held-out text: 200 characters of context, the true next 60 characters against three
    60-character spans from elsewhere in the split."""
    rng = random.Random(seed)
    rows = []
    for _ in range(questions):
        start = rng.randrange(0, len(test_text) - 400)
        distractors = [test_text[s: s + 60] for s in (rng.randrange(0, len(test_text) - 60) for _ in range(3))]
        choices = [test_text[start + 200: start + 260], *distractors]
        rng.shuffle(choices)
        rows.append({"question": test_text[start: start + 200], "choices": choices,
                     "answer": choices.index(test_text[start + 200: start + 260])})
    path = WORK / f"cloze_{questions}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def evaluate_folder(folder: Path, tokenizer, settings: dict, dtype=None) -> dict:
    _, test_text = corpus.split()
    quantized = "quantization_config" in json.loads((folder / "config.json").read_text())
    model = load_quantized(folder, dtype) if quantized else _load_plain(folder, dtype)
    tokens = tokenize(tokenizer, test_text)
    result = perplexity(model, tokens, CONTEXT, STRIDE, settings["test_tokens"])
    result.update(multiple_choice_accuracy(model, tokenizer, read_multiple_choice(
        multiple_choice_file(test_text, settings["questions"]))))
    result.update(generation_speed(model, tokens[:64].unsqueeze(0), new_tokens=64))
    return result


def _load_plain(folder: Path, dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype or torch.float32).eval()


def run_row(name: str, quick: bool, model_dir: Path) -> dict:
    """One row, in this (fresh) process: quantize, then evaluate the written folder."""
    settings = SETTINGS[quick]
    tokenizer = load_tokenizer(model_dir)
    if name in ("fp32", "bf16"):
        dtype = torch.float32 if name == "fp32" else torch.bfloat16
        row = {"bytes": folder_bytes(model_dir) // (1 if name == "fp32" else 2), "calibration_s": 0.0}
        row.update(evaluate_folder(model_dir, tokenizer, settings, dtype))
        return row
    train_text, _ = corpus.split()
    # only as much text as the windows need (about 4 characters a token, 4x spare): tokenizing the whole corpus
    # would set this process's peak RSS before quantization starts
    needed = settings["samples"] * settings["sequence_length"] * 16
    calibration = calibration_windows(tokenize(tokenizer, train_text[:needed]), settings["samples"],
                                      settings["sequence_length"])
    baseline = _peak_rss_mib()
    started = time.monotonic()
    output = WORK / model_dir.name / name
    result = apply_llm_ptq(LLMPTQSpec(**ROWS[name]), model_dir, output, calibration)
    row = {"bytes": result.metrics["bytes"], "calibration_s": round(time.monotonic() - started, 1),
           "peak_rss_mib": round(_peak_rss_mib(), 1), "rss_before_mib": round(baseline, 1),  # before evaluation
           "mean_output_error": result.metrics["mean_output_error"]}
    if "awq" in result.metrics:  # how much of the model AWQ's scales reached
        row["awq_weights"] = result.metrics["awq"]["weights"]
    row.update(evaluate_folder(output, tokenizer, settings))
    return row


def memory_row(quick: bool) -> dict:
    """GPTQ int4 g128 on a random 16-block Llama streamed from disk: peak RSS against block and model sizes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = RESULTS / "cache" / "llm" / "memory-16x768"
    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(**MEMORY_MODEL)).save_pretrained(folder, max_shard_size="100MB")
        return {"created": str(folder)}  # measured in the next fresh process, without the model ever in memory
    model_bytes = folder_bytes(folder)
    hidden, intermediate = MEMORY_MODEL["hidden_size"], MEMORY_MODEL["intermediate_size"]
    kv = hidden * MEMORY_MODEL["num_key_value_heads"] // MEMORY_MODEL["num_attention_heads"]
    block_bytes = 4 * (2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * intermediate + 2 * hidden)
    samples = 16 if quick else 64
    calibration = torch.randint(0, MEMORY_MODEL["vocab_size"], (samples, 256),
                                generator=torch.Generator().manual_seed(0))
    baseline = _peak_rss_mib()
    after_block: list[float] = []  # current RSS after each block (after setup for step 0)
    started = time.monotonic()
    result = apply_llm_ptq(LLMPTQSpec(algorithm="gptq", bits=4, group_size=128), folder, WORK / "memory",
                           calibration, RunContext(report=lambda event: after_block.append(_current_rss_mib())))
    activations = samples * 256 * hidden * 4
    return {"model_mib": round(model_bytes / 2 ** 20, 1), "block_mib": round(block_bytes / 2 ** 20, 1),
            "blocks": MEMORY_MODEL["num_hidden_layers"],
            "calibration_activations_mib": round(activations / 2 ** 20, 1),
            "rss_before_mib": round(baseline, 1), "rss_after_setup_mib": round(after_block[0], 1),
            "rss_after_block_mib": [round(value, 1) for value in after_block[1:]],
            "peak_rss_mib": round(_peak_rss_mib(), 1),
            "quantize_s": round(time.monotonic() - started, 1),
            "written_mib": round(result.metrics["bytes"] / 2 ** 20, 1)}


def _in_fresh_process(arguments: list[str]) -> dict:
    # one thread unless told otherwise: on shared cores two OpenMP threads spin-wait on each other (GPTQ 3x slower)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    completed = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True, env=env)
    if completed.returncode:
        raise RuntimeError(f"{arguments} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def table(rows: dict, memory: dict | None) -> str:
    fp32 = rows["fp32"]
    lines = ["| config | perplexity (vs fp32) | cloze acc | bytes (x smaller) | calibration s | "
             "RSS before / peak MiB | CPU tokens/s |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        lines.append(f"| {name} | {row['perplexity']:.3f} ({100 * (row['perplexity'] / fp32['perplexity'] - 1):+.2f} %)"
                     f" | {row['accuracy']:.3f} | {row['bytes']:,} ({fp32['bytes'] / row['bytes']:.2f}) "
                     f"| {row['calibration_s']:.1f} | {row.get('rss_before_mib', '')} / {row.get('peak_rss_mib', '')}"
                     f" | {row['tokens_per_s']} |")
    if memory is None:
        return "\n".join(lines)
    lines.append("")
    lines.append(f"Memory: GPTQ int4 g128 of a random {memory['blocks']}-block Llama streamed from disk: model "
                 f"{memory['model_mib']} MiB, one block {memory['block_mib']} MiB, calibration activations "
                 f"{memory['calibration_activations_mib']} MiB; RSS {memory['rss_before_mib']} MiB before, "
                 f"{memory['rss_after_setup_mib']} MiB with embeddings, head and first-block inputs, "
                 f"{memory['rss_after_block_mib'][0]} MiB after block 1 and {memory['rss_after_block_mib'][-1]} MiB "
                 f"after block {memory['blocks']}; peak {memory['peak_rss_mib']} MiB ({memory['quantize_s']} s).")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--row", help="run one row in this process and print its JSON (used internally)")
    parser.add_argument("--model-dir", type=Path, help="a Hugging Face folder instead of the trained one")
    parser.add_argument("--architecture", choices=pretrained.ARCHITECTURES, default="llama",
                        help="which trained model (bench/llm/pretrained.py) to quantize")
    parser.add_argument("--rows", help="comma-separated rows to run (default: all, with the memory row)")
    args = parser.parse_args()
    model_dir = args.model_dir or pretrained.model_dir(architecture=args.architecture)
    if args.row == "memory":
        print(json.dumps(memory_row(args.quick)))
        return
    if args.row:
        print(json.dumps(run_row(args.row, args.quick, model_dir)))
        return
    common = ["--model-dir", str(model_dir)] + (["--quick"] if args.quick else [])
    rows = {}
    for name in args.rows.split(",") if args.rows else ("fp32", "bf16", *ROWS):
        rows[name] = _in_fresh_process(["--row", name, *common])
        print(name, json.dumps(rows[name]), flush=True)
    if args.rows:  # a chosen subset: its table only
        print(table(rows, None))
        return
    memory = _in_fresh_process(["--row", "memory", *common])
    if "created" in memory:
        memory = _in_fresh_process(["--row", "memory", *common])
    print(json.dumps(memory), flush=True)
    training = json.loads((model_dir / "training.json").read_text()) if (model_dir / "training.json").exists() else {}
    report = {"quick": args.quick, "model_dir": str(model_dir), "context_length": CONTEXT, "stride": STRIDE,
              "settings": SETTINGS[args.quick], "training": training, "rows": rows, "memory": memory,
              "torch_threads": torch.get_num_threads()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"llm{'_quick' if args.quick else ''}.json").write_text(json.dumps(report, indent=2))
    print(table(rows, memory))


if __name__ == "__main__":
    main()
