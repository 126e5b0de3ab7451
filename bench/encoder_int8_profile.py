"""Where an int8 BERT encoder's time goes: fp32 vs int8 (the service's PTQ and compile path) at batch 1 and 32.

The rxnfp case's folder (bench/real_models/rxnfp_bert.py, 12 layers, width 256, 88 tokens) or MiniLM's goes
through the worker's folder -> `.pt2` conversion (`compression.hf_program.folder_to_program`), is quantized by
`compression.ptq.quantize.quantize_int8` on 128 calibration rows in batches of 32 (the `ptq` stage's defaults;
the first train rows, not shuffled), and both programs are timed compiled in alternation
(`compression.measure.time_in_alternation`). Printed: the int8 [CLS] cosine to fp32, the timings with their load
average, and inductor's int8 fusion counters (qlinear + GELU is a unary match, qlinear + residual add a binary
one). With `--profile`, torch.profiler then records the compiled int8 and fp32 models at batch 32 and prints the
ops by self CPU time and the time per pass of each group (attention, int8/fp32 linears, inductor's kernels).

    OMP_NUM_THREADS=1 nice .venv/bin/python -m bench.encoder_int8_profile [--model rxnfp|minilm] [--profile]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from bench.real_models import minilm, rxnfp_bert
from bench.real_models.cases import CACHE
from compression.archive.jsonl import TextSplit
from compression.hf_program import folder_to_program
from compression.io import inputs_at_batch, load_program
from compression.measure import run_compiled, time_in_alternation
from compression.ptq.quantize import quantize_int8

CALIBRATION_ROWS, CALIBRATION_BATCH = 128, 32  # the ptq stage's default samples and batch
PASSES = 5
INPUTS = ("input_ids", "attention_mask")
# Profiler op names -> the share they stand for. Inductor's own generated kernels (layer norm, GELU, residual adds,
# quantize/dequantize, copies) are not profiler ops: their time is the compiled graph's self time.
GROUPS = {"attention (SDPA)": "scaled_dot_product", "int8 linear (oneDNN)": "qlinear_pointwise",
          "fp32 linear": "linear", "inductor kernels": "CompiledFxGraph"}


def program(model: str, scratch: Path) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], np.lib.npyio.NpzFile]:
    if model == "rxnfp":
        folder = rxnfp_bert.write_upload_folder(CACHE / "rxnfp_bert_ft")
        texts = rxnfp_bert.reactions(512)
        texts.pop("val_labels")
    else:
        folder, texts = minilm.folder(), minilm.texts(512)
    splits = {name: TextSplit(len(rows), list(rows)) for name, rows in texts.items()}
    example = folder_to_program(folder, minilm.TASK, splits, scratch / "model.pt2", scratch / "arrays.npz")
    return load_program(scratch / "model.pt2").module(), example, np.load(scratch / "arrays.npz")


def profile(name: str, model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], rows: int) -> None:
    run = run_compiled(model)
    with torch.no_grad():
        for _ in range(3):
            run(*inputs)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(PASSES):
                run(*inputs)
    print(f"\n### {name}, batch {inputs[0].shape[0]}: ops by self CPU time ({PASSES} passes)\n")
    averages = prof.key_averages()
    print(averages.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=70))
    shares = {group: 0.0 for group in GROUPS} | {"other": 0.0}
    for event in averages:
        group = next((group for group, needle in GROUPS.items() if needle in event.key), "other")
        shares[group] += event.self_cpu_time_total / 1000 / PASSES
    total = sum(shares.values())
    print(" | ".join(f"{group} {ms:.1f} ms ({ms / total:.0%})" for group, ms in shares.items()) + " per pass")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("rxnfp", "minilm"), default="rxnfp")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--budget-s", type=float, default=6.0)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rows", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    with tempfile.TemporaryDirectory() as scratch:
        fp32, example, arrays = program(args.model, Path(scratch))
        train = tuple(torch.from_numpy(arrays[f"train.{name}"][:CALIBRATION_ROWS]) for name in INPUTS)
        batches = [tuple(t[i:i + CALIBRATION_BATCH] for t in train)
                   for i in range(0, CALIBRATION_ROWS, CALIBRATION_BATCH)]
        models = {"fp32": fp32, "int8": quantize_int8(fp32, example, batches)}
        val = tuple(torch.from_numpy(arrays[f"val.{name}"][:64]) for name in INPUTS)
        with torch.no_grad():
            cosine = F.cosine_similarity(models["int8"](*val)[:, 0], fp32(*val)[:, 0]).mean()
        print(f"{args.model}: {example[0].shape[1]} tokens; int8 [CLS] cosine to fp32 (64 val rows) {cosine:.5f}; "
              f"load average before timing {os.getloadavg()}")
        timings = time_in_alternation(models, example, args.batches, compile=True, budget_s=args.budget_s)
        print("| batch | model | ms (spread) | speedup over fp32 | load average | reliable |")
        print("|---|---|---|---|---|---|")
        for batch in args.batches:
            reference = timings["fp32"][batch].median_ms
            for name, per_batch in timings.items():
                t = per_batch[batch]
                print(f"| {batch} | {name} | {t.median_ms:.2f} ({t.spread:.0%}) | {reference / t.median_ms:.2f}x | "
                      f"{t.load_average:.2f} | {t.reliable} {t.reason or ''} |")
        fused = {key: value for key, value in counters["inductor"].items() if "qlinear" in key or "qsdpa" in key}
        print(f"inductor int8 pattern counters (all compiled graphs): {fused}")
        if args.profile:
            inputs = inputs_at_batch(example, 32)
            profile("int8", models["int8"], inputs, args.rows)
            profile("fp32", fp32, inputs, args.rows)


if __name__ == "__main__":
    main()
