"""Differentiable quantization (Polino et al. 2018): learn each layer's 4-bit quantization points by gradient
descent, starting from quantiles of its weights."""

import sys

from common import run_example

from modelpress import DifferentiableQuantization, Training


def stages() -> list:
    return [DifferentiableQuantization(bits=4, training=Training(steps=1000, lr=1e-4))]


if __name__ == "__main__":
    sys.exit(run_example(stages()))
