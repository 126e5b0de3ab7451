"""KD into CREPE tiny's randomly initialised half-width student, printing the loss as it trains: how the student's
BatchNorm momentum decides whether it leaves the all-bins-dark plateau (the loss of predicting every bin near 0).
With torchcrepe's momentum 0 a random student's statistics stay at mean 0, variance 1 and it trains unnormalised
(the job warns); the benchmark's student uses 0.1.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.real_models.kd_plateau --momentum 0 --steps 1500
    OMP_NUM_THREADS=1 .venv/bin/python -m bench.real_models.kd_plateau --momentum 0.1 --steps 1000
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.real_models import cases, crepe
from bench.real_models.cases import outputs_of
from compression.context import RunContext
from compression.io import export_model, save_program
from compression.pipeline import run_pipeline
from compression.specs import KDSpec
from compression.specs.common import EvaluationSpec
from compression.specs.distill import UploadedStudent
from compression.specs.training import TrainingSpec


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--momentum", type=float, default=0.1, help="the student's BatchNorm momentum")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100, help="print the loss every this many steps")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kd_plateau_"))
    case = cases.crepe_case(workdir, {"train": 1024, "val": 256})
    student = crepe.student("tiny", batch_norm_momentum=args.momentum)
    student_path = save_program(export_model(student, case.example), workdir / "student.pt2")

    def report(event):
        if event.phase == "train" and event.step % args.every == 0:
            print(f"step {event.step}: loss {event.metrics.get('loss')}", flush=True)

    spec = KDSpec(student=UploadedStudent(model_id="student"),
                  training=TrainingSpec(steps=args.steps, batch_size=32, lr=1e-3, checkpoint_every=100_000))
    result = run_pipeline(case.upload, case.dataset, [spec], EvaluationSpec(latency=False), RunContext(report=report),
                          workdir / "job", uploaded_models={"student": student_path})
    reference = outputs_of(case.fp32, case.eval_inputs)
    judged = case.judge(outputs_of(result.stages[-1].model, case.eval_inputs), reference)
    print(json.dumps({"momentum": args.momentum, "steps": args.steps, "rpa": judged["task"],
                      "fp32_rpa": case.judge(reference, reference)["task"],
                      "warnings": result.final.get("warnings", [])}))


if __name__ == "__main__":
    main()
