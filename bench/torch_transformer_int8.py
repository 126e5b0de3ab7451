"""Default int8 PTQ of a classifier built on PyTorch's own `nn.TransformerEncoder`, in-process through
`run_pipeline` as the worker runs a job: how many linear layers are int8, size, fidelity and compiled latency
against fp32 timed in alternation (docs/quantization.md, linear calls no nn.Linear made).

`nn.MultiheadAttention` projects with `F.linear` on its own weights, which torchao's x86 quantizer left float
until `compression/ptq/functional_layers.py`; `--unmarked` runs the recipe without that marking, for the
comparison in one run.

    OMP_NUM_THREADS=2 .venv/bin/python -m bench.torch_transformer_int8 [--width 256] [--layers 2] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from compression.context import RunContext
from compression.io import save_program
from compression.pipeline import run_pipeline
from compression.specs import PTQSpec
from compression.specs.common import EvaluationSpec


class EncoderClassifier(torch.nn.Module):
    def __init__(self, width: int, layers: int, classes: int = 10):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(width, 4, 4 * width, batch_first=True, dropout=0.0)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(width, classes)

    def forward(self, x):
        return self.head(self.encoder(x).mean(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--unmarked", action="store_true", help="also run int8 without marking the F.linear calls")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = EncoderClassifier(args.width, args.layers).eval()
    example = torch.randn(4, args.tokens, args.width)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", max=1024)},))
    workdir = Path(tempfile.mkdtemp(prefix="torch_transformer_int8_"))
    save_program(program, workdir / "model.pt2")
    rng = np.random.default_rng(0)
    np.savez(workdir / "data.npz", **{"train.x": rng.standard_normal((128, args.tokens, args.width), np.float32),
                                      "val.x": rng.standard_normal((64, args.tokens, args.width), np.float32)})
    evaluation = EvaluationSpec(latency_batch_sizes=[1, 32])
    runs = {"int8": None}
    if args.unmarked:
        runs["int8, attention projections float (before)"] = "unmarked"
    for label, variant in runs.items():
        if variant == "unmarked":  # the recipe as it was: the quantizer sees nn.Linear modules only
            import compression.ptq.quantize as quantize

            quantize.mark_functional_layers = lambda graph: []
        result = run_pipeline(workdir / "model.pt2", workdir / "data.npz", [PTQSpec()], evaluation, RunContext(),
                              workdir / label.split(",")[0])
        stage = result.stages[0].metrics
        print(json.dumps({
            "run": label, "quantized_layers": stage["method_metrics"]["quantized_layers"],
            "functional_layers": stage["method_metrics"].get("functional_layers", []),
            "compression_ratio": round(stage["compression_ratio"], 2),
            "top1_agreement": stage.get("top1_agreement"), "kl": stage.get("kl"),
            "latency_ms": stage.get("latency_ms"), "fp32_latency_ms": stage.get("reference_latency_ms"),
            "speedup": stage.get("speedup"), "unreliable": stage.get("latency_unreliable")}), flush=True)


if __name__ == "__main__":
    main()
