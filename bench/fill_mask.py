"""A real pretrained masked language model through a fill-mask job: rxnfp's `bert_pretrained` (Schwaller et al. 2021;
the `rxnfp` wheel on PyPI, MIT: BERT, 12 layers, 256 wide, 4 heads, 591 SMILES tokens, pretrained by masked-LM on
reaction SMILES and saved with its masked-LM and next-sentence heads, `BertForPreTraining`), converted once to the
folder a user would upload (`bench.real_models.rxnfp_bert.write_upload_folder`), on reaction SMILES written from the
templates of `bench.real_models.rxnfp_bert` (text the model was pretrained on the like of).

Each row is one job run by the function the worker runs (`run_folder_pipeline`, task fill-mask): the worker masks
15 % of each reaction's tokens and the job measures masked-token accuracy and perplexity, the program's bytes, and
batch-1 / batch-32 latency under torch.compile against the float program's (timed in alternation, the pipeline's
measurement). Nothing is downloaded.

    pip install --no-deps rxnfp==0.1.0
    OMP_NUM_THREADS=2 .venv/bin/python -m bench.fill_mask [--rows int8,w8]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.real_models import rxnfp_bert
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.specs import KDSpec, PTQSpec
from compression.specs.common import EvaluationSpec
from compression.specs.distill import LayersStudent
from compression.specs.ptq import WeightQuantSpec
from compression.specs.training import TrainingSpec
from tests.hf_folders import zip_bytes

CACHE = Path(__file__).resolve().parent / "results" / "real_models_cache"  # (ignored by git)
ROWS = {
    "int8": ("int8 PTQ (default)", [PTQSpec()]),
    "w8": ("weight-only int8", [PTQSpec(activations=None)]),
    "w4": ("weight-only int4 (g32, mse)", [PTQSpec(activations=None, weights=WeightQuantSpec(
        bits=4, granularity="per_group", group_size=32, range="mse"))]),
    "kd6": ("KD -> 6 of 12 layers (300 steps)", [KDSpec(student=LayersStudent(keep=6), training=TrainingSpec(
        steps=300, batch_size=32, lr=1e-4, checkpoint_every=10_000))]),
}


def text_dataset(path: Path) -> Path:
    reactions = rxnfp_bert.reactions(train_rows=512)
    rows = [{"split": split, "text": text} for split in ("train", "val") for text in reactions[split]]
    path.write_text("\n".join(json.dumps(row) for row in rows))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated of {list(ROWS)}")
    args = parser.parse_args()
    folder = rxnfp_bert.write_upload_folder(CACHE / "rxnfp_bert_pretrained", "bert_pretrained",
                                            "BertForPreTraining")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print("| row | masked-token accuracy | perplexity | program MiB | x smaller | b1 ms | b32 ms | x faster b32 "
          "| folder | job s |\n|---|---|---|---|---|---|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        archive = root / "rxnfp_mlm.zip"
        archive.write_bytes(zip_bytes(folder))
        dataset = text_dataset(root / "reactions.jsonl")
        evaluation = EvaluationSpec(latency_batch_sizes=[1, 32], compile=True)
        baseline_printed = False
        for key in args.rows.split(","):
            label, stages = ROWS[key]
            started = time.monotonic()
            result = run_folder_pipeline(archive, dataset, "fill-mask", stages, evaluation, RunContext(),
                                         root / key)
            seconds = time.monotonic() - started
            base, stage = result.baseline, result.stages[-1].metrics
            if not baseline_printed:
                print(f"| fp32 (upload) | {base['accuracy']:.4f} | {base['perplexity']:.3f} | "
                      f"{base['size_bytes'] / 2**20:.1f} | 1.00x | {base['latency_ms']['1']:.2f} | "
                      f"{base['latency_ms']['32']:.1f} | 1.00x | | |", flush=True)
                baseline_printed = True
            folder_note = stage.get("hf_folder", {})
            written = (f"{folder_note.get('size_bytes', 0) / 2**20:.1f} MiB" if folder_note.get("written")
                       else "none")
            print(f"| {label} | {stage['accuracy']:.4f} | {stage['perplexity']:.3f} | "
                  f"{stage['size_bytes'] / 2**20:.1f} | {stage['compression_ratio']:.2f}x | "
                  f"{stage['latency_ms']['1']:.2f} | {stage['latency_ms']['32']:.1f} | "
                  f"{base['latency_ms']['32'] / stage['latency_ms']['32']:.2f}x | {written} | {seconds:.0f} |",
                  flush=True)
            for warning in result.warnings if hasattr(result, "warnings") else ():
                print(f"  warning: {warning}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
