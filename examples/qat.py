"""Quantization-aware training with learned step sizes (LSQ): 4-bit weights and activations that keep nearly
all the accuracy, where 4-bit post-training quantization loses points."""

import sys

from common import run_example

from modelpress import QAT, Training


def stages() -> list:
    return [QAT(weight_bits=4, activation_bits=4, quantizer="lsq", training=Training(steps=1000, lr=1e-4))]


if __name__ == "__main__":
    sys.exit(run_example(stages()))
