"""Pruning: remove a quarter of the channels (structured, so it runs faster on CPU) and finetune, then int8
post-training quantization of what is left."""

import sys

from common import run_example

from modelpress import PTQ, Prune, Training


def stages() -> list:
    return [Prune(kind="structured", sparsity=0.25, finetune=Training(steps=300, lr=1e-4)),
            PTQ(calibration_samples=256)]


if __name__ == "__main__":
    sys.exit(run_example(stages()))
