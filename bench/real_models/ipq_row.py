"""Issue 10 experiments: only the "iPQ + int8" row of the real-model benchmark, through the worker's pipeline (the
folder pipeline for the transformers), with few finetuning steps (a few minutes on one core). Options of the spec
as JSON override the row's:

    OMP_NUM_THREADS=1 nice .venv/bin/python -m bench.real_models.ipq_row --model rxnfp --steps 20
    ... --spec '{"block_sizes": {"linear": 8}, "activation_weighted": false}'   # the defaults before issue 10
    ... --model pesto --train 1024 --val 512 --steps 100 --spec '{"centroids": 64}'   # the CNN row's sizes
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.real_models.cases import CASES, outputs_of
from bench.real_models.rows import cnn_rows, transformer_rows
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.pipeline import run_pipeline
from compression.specs import IPQSpec
from compression.specs.common import EvaluationSpec


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="rxnfp", choices=["rxnfp", "minilm", "crepe-tiny", "pesto"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--val", type=int, default=128)
    parser.add_argument("--spec", default="{}", help="IPQSpec fields (JSON) over the benchmark row's")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ipq_row_"))
    case = CASES[args.model](workdir, {"train": args.train, "val": args.val})
    rows = transformer_rows if case.kind == "transformer" else cnn_rows
    row, = dict(rows({"kd": 1, "kd_cnn": 1, "prune": 1, "ipq": args.steps}))["iPQ + int8"]  # the table's row
    spec = IPQSpec.model_validate(row.model_dump() | json.loads(args.spec))
    started = time.monotonic()
    evaluation = EvaluationSpec(latency=False)
    result = (run_folder_pipeline(case.upload, case.dataset, case.hf_task, [spec], evaluation, RunContext(),
                                  workdir / "job") if case.hf_task else
              run_pipeline(case.upload, case.dataset, [spec], evaluation, RunContext(), workdir / "job"))
    reference = outputs_of(case.reference or case.fp32, case.eval_inputs)
    judged = case.judge(outputs_of(result.stages[-1].model, case.eval_inputs), reference)
    fp32_task = case.judge(reference, reference)["task"]
    print(json.dumps({"model": case.name, "spec": json.loads(args.spec), "steps": args.steps, "fp32_task": fp32_task,
                      **{key: round(value, 4) for key, value in judged.items()},
                      "x_smaller": round(result.baseline["size_bytes"] / result.final["size_bytes"], 2),
                      "bytes": result.final["size_bytes"], "warnings": result.final.get("warnings", []),
                      "wall_s": round(time.monotonic() - started),
                      "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
