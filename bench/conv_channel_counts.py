"""fp32 time of CREPE's first layer shape (a one-channel (512, 1) conv, stride 4, over 1024 + 511 samples, batch
32, one thread, eager) for several output channel counts, tall as CREPE writes it and turned on its side ((1, 512)
over [N, 1, 1, time], as `compression.ptq.conv_orientation` turns it): oneDNN picks a much slower tall kernel for
some counts, which is why CREPE's structurally pruned model (103 channels) was slower than its upload until prune
stages wrote their convs on their side (docs/benchmarks-real-models.md).

    .venv/bin/python -m bench.conv_channel_counts
"""

from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F


def _median_ms(fn, runs: int = 15) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[runs // 2] * 1e3


def main() -> None:
    torch.set_num_threads(1)
    x = torch.randn(32, 1, 1024 + 511, 1)
    side_x = x.transpose(2, 3)
    with torch.no_grad():
        for channels in (128, 120, 112, 104, 103, 96, 64):
            weight = torch.randn(channels, 1, 512, 1)
            side_weight = weight.transpose(2, 3).contiguous()
            tall = _median_ms(lambda: F.conv2d(x, weight, stride=(4, 1)))
            side = _median_ms(lambda: F.conv2d(side_x, side_weight, stride=(1, 4)))
            print(f"{channels} channels: tall {tall:.2f} ms, on its side {side:.2f} ms")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
