"""Knowledge distillation (Hinton): train a smaller student from the zoo to match the uploaded model's softened
outputs."""

import sys

from common import run_example

from modelpress import KD, Training


def stages() -> list:
    return [KD(student={"kind": "zoo", "architecture": "small_cnn", "width": 0.5}, temperature=4.0,
               training=Training(steps=2000, lr=1e-3))]


if __name__ == "__main__":
    sys.exit(run_example(stages()))
