"""Iterative product quantization (Stock et al.): k-means codebooks over weight blocks, one layer group at a
time, finetuning what remains; centroids stored as int8."""

import sys

from common import run_example

from modelpress import IPQ


def stages() -> list:
    return [IPQ(centroids=64, centroid_dtype="int8")]


if __name__ == "__main__":
    sys.exit(run_example(stages()))
