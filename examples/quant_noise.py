"""Quant-Noise (Fan, Stock et al. 2020) then iPQ with int8 centroids: finetune with noise on a random 10 % of
weight blocks so the model tolerates the product quantization that follows; about 20x smaller."""

import sys

from common import run_example

from modelpress import IPQ, QuantNoise, Training


def stages() -> list:
    return [QuantNoise(noise={"rate": 0.1, "kind": "proxy"}, training=Training(steps=500, lr=1e-4)),
            IPQ(centroids=64, centroid_dtype="int8")]


if __name__ == "__main__":
    sys.exit(run_example(stages()))
