"""A T5-small-sized encoder-decoder through the service's seq2seq-lm path: how long the job takes (the upload writing
its outputs included), how much smaller the int8 program and its Hugging Face folder are, and how much faster the
int8 teacher-forced forward runs than the float one (compiled, batch 1 and 8).

The weights are random (`T5Config` at t5-small's sizes, 60M parameters): no pretrained encoder-decoder ships inside a
package this machine can install, so the figures are sizes and speeds, not a trained model's fidelity.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.seq2seq_lm
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch

from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import EvaluationSpec, PTQSpec
from tests.hf_folders import CORPUS, save_tokenizer, zip_bytes


def t5_small_folder(folder: Path) -> Path:
    import transformers

    folder.mkdir(parents=True)
    save_tokenizer(folder)
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_heads=8,
                                   decoder_start_token_id=1, pad_token_id=1, eos_token_id=2)
    transformers.T5ForConditionalGeneration(config).save_pretrained(folder)
    return folder


def main() -> None:
    root = Path(tempfile.mkdtemp())
    (root / "t5.zip").write_bytes(zip_bytes(t5_small_folder(root / "t5")))
    rows = [{"split": "train", "text": text} for text in CORPUS[:32]]
    rows += [{"split": "val", "text": text} for text in CORPUS[32:64]]
    (root / "rows.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    started = time.monotonic()
    result = run_folder_pipeline(root / "t5.zip", root / "rows.jsonl", None, [PTQSpec(calibration_samples=32)],
                                 EvaluationSpec(latency_batch_sizes=[1, 8]), RunContext(), root / "work")
    print(f"job: {time.monotonic() - started:.0f} s")
    print_int8_figures(result)


def print_int8_figures(result) -> None:
    """The int8 stage's program and folder sizes, its latency against the float program's at each batch size, and
    its accuracy and perplexity on the output tokens (an encoder-decoder job's one ptq stage)."""
    baseline, stage = result.baseline, result.stages[0].metrics
    print(f"program: {baseline['size_bytes'] / 2**20:.1f} MiB float -> {stage['size_bytes'] / 2**20:.1f} MiB int8 "
          f"({stage['compression_ratio']:.2f}x)")
    print(f"folder: {stage['hf_folder'].get('size_bytes', 0) / 2**20:.1f} MiB "
          f"(written: {stage['hf_folder']['written']})")
    for batch, float_ms in baseline["latency_ms"].items():
        int8_ms = stage["latency_ms"][batch]
        print(f"batch {batch}: {float_ms:.1f} ms float -> {int8_ms:.1f} ms int8 ({float_ms / int8_ms:.2f}x faster)")
    print(f"accuracy on the upload's own tokens: {baseline['accuracy']:.3f} -> {stage['accuracy']:.3f}; "
          f"perplexity {baseline['perplexity']:.1f} -> {stage['perplexity']:.1f}")


if __name__ == "__main__":
    main()
