"""int8 PTQ on a randomly initialised GPT-2 LM program (transformers' Conv1D blocks), in-process through
`run_pipeline` as the worker runs a job: the size ratio and top-1 agreement of int8 static, weight-only int8 and
weight-only int4 (docs/quantization.md, GPT-2's Conv1D as linears). The default model is tiny (its serialized graph
outweighs its weights); `--width 256 --layers 4 --vocab 2048` gives one whose weights dominate, as a real GPT-2's do.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.gpt2_int8 [--width 64] [--layers 2] [--vocab 320]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from compression.context import RunContext
from compression.io import save_program
from compression.pipeline import run_pipeline
from compression.specs import PTQSpec
from compression.specs.common import EvaluationSpec


class _Logits(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return self.model(input_ids=input_ids, use_cache=False).logits


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=320)
    args = parser.parse_args()
    torch.manual_seed(0)
    vocab = args.vocab
    config = GPT2Config(vocab_size=vocab, n_embd=args.width, n_layer=args.layers, n_head=4, n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    model = _Logits(GPT2LMHeadModel(config)).eval()
    ids = torch.randint(0, vocab, (4, 16))
    program = torch.export.export(model, (ids,), dynamic_shapes=({0: torch.export.Dim("batch", max=1024)},))
    workdir = Path(tempfile.mkdtemp(prefix="gpt2_int8_"))
    save_program(program, workdir / "gpt2.pt2")
    rng = np.random.default_rng(0)
    np.savez(workdir / "data.npz", **{"train.input_ids": rng.integers(0, vocab, (128, 16)),
                                      "val.input_ids": rng.integers(0, vocab, (64, 16))})
    print(f"GPT-2 width {args.width}, {args.layers} layers, vocabulary {vocab}: "
          f"{sum(p.numel() for p in model.parameters()):,} parameters")
    int4 = {"bits": 4, "granularity": "per_group", "group_size": 32}
    for label, spec in [("int8 static", PTQSpec()), ("weight-only int8", PTQSpec(activations=None)),
                        ("weight-only int4", PTQSpec(activations=None, weights=int4))]:
        result = run_pipeline(workdir / "gpt2.pt2", workdir / "data.npz", [spec], EvaluationSpec(latency=False),
                              RunContext(), workdir / label.replace(" ", "_"))
        final = result.final
        print(f"{label}: {final['metric']} {final['metric_points']:.2f}, {final['compression_ratio']:.2f}x smaller")


if __name__ == "__main__":
    main()
