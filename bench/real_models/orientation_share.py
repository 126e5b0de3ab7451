"""How much of a pruned CREPE's speed-up is the orientation of its convolutions: the upload as it is (tall (k, 1)
convs over [N, C, time, 1]) against the same program turned on its side by `float_program_on_its_side` (what a
prune stage now writes), timed in alternation, compiled, one thread. The turn is exact; the script checks it.

    OMP_NUM_THREADS=1 nice .venv/bin/python -m bench.real_models.orientation_share [--model crepe-tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

from bench.real_models.cases import CASES
from compression.io import load_program
from compression.measure import time_in_alternation
from compression.modes import eval_mode
from compression.ptq.conv_orientation import float_program_on_its_side


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="crepe-tiny", choices=["crepe-tiny", "pesto"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    case = CASES[args.model](Path(tempfile.mkdtemp(prefix="orientation_")), {"train": 64, "val": 64})
    program = load_program(case.upload)
    turned, count = float_program_on_its_side(load_program(case.upload), case.example)
    models = {"tall (upload)": eval_mode(program.module()), "on its side": eval_mode(turned.module())}
    with torch.no_grad():
        gap = (models["tall (upload)"](*case.eval_inputs) - models["on its side"](*case.eval_inputs)).abs().max()
    timings = time_in_alternation(models, case.example, [1, 32], compile=True)
    print(json.dumps({"model": case.name, "convs_turned": count, "max_abs_output_gap": float(gap),
                      **{name: {batch: round(t.median_ms, 3) for batch, t in by_batch.items()}
                         for name, by_batch in timings.items()},
                      "x_faster_b32": round(timings["tall (upload)"][32].median_ms
                                            / timings["on its side"][32].median_ms, 2),
                      "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
