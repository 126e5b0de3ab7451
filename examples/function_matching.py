"""Function matching (Beyer et al. 2022): teacher and student see the same augmented view (crop, flip, mixup);
patient, consistent distillation for long schedules."""

import sys

from common import run_example

from modelpress import FunctionMatching, Training


def stages() -> list:
    return [FunctionMatching(student={"kind": "zoo", "architecture": "small_cnn", "width": 0.5},
                             training=Training(steps=5000, lr=1e-3))]


if __name__ == "__main__":
    sys.exit(run_example(stages()))
