"""Quantized distillation (Polino et al. 2018): the model trains with 2-bit bucketed weights in the forward pass
and the uploaded model as teacher; keeps far more accuracy at 2 bits than post-training quantization."""

import sys

from common import run_example

from modelpress import QuantizedDistillation, Training


def stages() -> list:
    return [QuantizedDistillation(bits=2, bucket_size=256, training=Training(steps=2000, lr=1e-4))]


if __name__ == "__main__":
    sys.exit(run_example(stages()))
