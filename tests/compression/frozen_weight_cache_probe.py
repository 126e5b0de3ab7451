"""Run by test_frozen_weight_cache in a fresh process with its own TORCHINDUCTOR_CACHE_DIR: compiles models as a
job's timing does (`compression.measure.run_compiled`, freezing on) and prints, per compile, the FX graph cache's
counters and how far the compiled output is from the model's own eager output."""

import json
import sys

import torch
from torch import nn
from torch._dynamo.utils import counters

from compression.measure import run_compiled
from compression.ptq.int8_kernels import full_range_activations_saturate
from compression.ptq.quantize import quantize_int8

COUNTERS = ("fxgraph_cache_hit", "fxgraph_cache_miss", "fxgraph_cache_bypass")


def cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    # 16 channels: per-channel constants longer than 8 are frozen parameters keyed by metadata, not inlined.
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 16)).eval()


def compile_and_compare(model: nn.Module, x: torch.Tensor) -> dict:
    before = dict(counters["inductor"])
    with torch.no_grad():
        eager, compiled = model(x), run_compiled(model)(x)
    after = dict(counters["inductor"])
    figures = {name: after.get(name, 0) - before.get(name, 0) for name in COUNTERS}
    return {**figures, "max_abs_error": (compiled - eager).abs().max().item(), "output": eager.flatten()[:4].tolist()}


def main() -> None:
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    results = {}
    for seed in (0, 1):  # one architecture, two sets of weights
        results[f"fp32_seed{seed}"] = compile_and_compare(cnn(seed), x)
    # 0..127 activations where full-range ones saturate (no VNNI: compression/ptq/int8_kernels.py), for exact kernels
    reduce_range = full_range_activations_saturate()
    for run in ("first", "again"):  # the same int8 model quantized twice, as a tenant's repeat job does
        int8 = quantize_int8(cnn(0), (x,), [(x,)], reduce_range=reduce_range)
        results[f"int8_{run}"] = compile_and_compare(int8, x)
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
