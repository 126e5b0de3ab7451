"""Default int8 PTQ on a tiny randomly initialised GPT-2 LM program (transformers' Conv1D blocks), in-process
through `run_pipeline` as the worker runs a job: the size ratio and top-1 agreement of int8 static and weight-only
int8 (docs/quantization.md, GPT-2's Conv1D as linears).

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.gpt2_int8
"""

from __future__ import annotations

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
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=320, n_embd=64, n_layer=2, n_head=4, n_positions=64, bos_token_id=0,
                        eos_token_id=0)
    model = _Logits(GPT2LMHeadModel(config)).eval()
    ids = torch.randint(0, 320, (4, 16))
    program = torch.export.export(model, (ids,), dynamic_shapes=({0: torch.export.Dim("batch", max=1024)},))
    workdir = Path(tempfile.mkdtemp(prefix="gpt2_int8_"))
    save_program(program, workdir / "gpt2.pt2")
    rng = np.random.default_rng(0)
    np.savez(workdir / "data.npz", **{"train.input_ids": rng.integers(0, 320, (128, 16)),
                                      "val.input_ids": rng.integers(0, 320, (64, 16))})
    for label, spec in [("int8 static", PTQSpec()), ("weight-only int8", PTQSpec(activations=None))]:
        result = run_pipeline(workdir / "gpt2.pt2", workdir / "data.npz", [spec], EvaluationSpec(latency=False),
                              RunContext(), workdir / label.replace(" ", "_"))
        final = result.final
        print(f"{label}: {final['metric']} {final['metric_points']:.2f}, {final['compression_ratio']:.2f}x smaller")


if __name__ == "__main__":
    main()
