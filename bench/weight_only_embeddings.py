"""Issue 10: bytes of weight-only PTQ (general path) on a BERT-shaped encoder with and without quantized
embedding tables.

A transformers BertModel (vocabulary 30522, hidden 384, 6 layers, 12 heads, feed-forward 1536; random init,
nothing downloaded; the word table is about half the weights) mean-pooled to one vector, through weight-only int8
and int4 (group 32) with `embeddings` null, int8 per row (the default) and 4-bit per group of 32. Printed: the
`model_packed.safetensors` bytes and how many times smaller than the fp32 state dict. About a minute.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.weight_only_embeddings
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel

from compression.context import RunContext
from compression.data import Dataset
from compression.quant.general import apply_general_ptq
from compression.specs.ptq import PTQSpec
from compression.task import Task

WEIGHTS = {"int8": {"bits": 8}, "int4-g32": {"bits": 4, "granularity": "per_group", "group_size": 32}}
RUNS = [("int8", None), ("int8", {"bits": 8}), ("int4-g32", None), ("int4-g32", {"bits": 8}),
        ("int4-g32", {"bits": 4, "group_size": 32})]


class MeanPooledBert(torch.nn.Module):
    def __init__(self):
        super().__init__()
        config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                            intermediate_size=1536)
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, ids):
        return self.bert(input_ids=ids).last_hidden_state.mean(1)


def main() -> None:
    torch.manual_seed(0)
    model = MeanPooledBert().eval()
    fp32 = sum(t.numel() * 4 for t in model.state_dict().values() if t.is_floating_point())
    ids = np.random.default_rng(0).integers(0, 30522, (48, 16))
    dataset = Dataset.from_arrays({"train.ids": ids[:32], "val.ids": ids[32:]}, ["ids"])
    print(f"fp32 state dict: {fp32:,} bytes")
    for weights, embeddings in RUNS:
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as workdir:
            task = Task(dataset, model, (torch.from_numpy(ids[:4]),), Path(workdir))
            spec = PTQSpec.model_validate({"method": "ptq", "activations": None, "weights": WEIGHTS[weights],
                                           "embeddings": embeddings, "calibration_samples": 8,
                                           "selection_samples": 16, "export_onnx": False})
            result = apply_general_ptq(spec, model, task, RunContext())
        packed = result.metrics["artifacts"]["model_packed.safetensors"]
        tables = len(result.metrics["embeddings"]["tables"])
        print(f"weights {weights:9s} embeddings {str(embeddings):32s} {packed['size_bytes']:>12,} bytes "
              f"{packed['compression_ratio']:5.2f}x  tables quantized: {tables}  ({time.monotonic() - started:.0f} s)",
              flush=True)


if __name__ == "__main__":
    main()
