"""Long-kernel convolutions in int8: implicit padding (oneDNN's slow zero-point path) against the explicit pad
`compression/ptq/explicit_padding.py` puts before them, and against compiled fp32.

Models (random weights; speed does not depend on them, except through the input zero point, which calibration on
random inputs makes nonzero as real data does):

- `toeplitz`: PESTO's head: a 1x1 conv to 3 channels, LeakyReLU, flattened to one channel of 792, then a
  one-channel 1175-tap conv padded 383 (output 384), as the pretrained PESTO pitch model's "ToeplitzLinear";
- `conv16x255`: a 1x1 conv to 16 channels, LeakyReLU, a 16 -> 16 conv of 255 taps padded "same" over 512;
- `pesto` (with --pesto): the pretrained PESTO encoder (`bench/real_models/pesto_cnn.py`), calibrated on random
  frames (timing only: its accuracy is in `bench.real_models.run --models pesto`).

Each model is quantized by `compression.ptq.quantize_int8` twice, with the rewrite (`int8`, the service's path) and
without it (`int8 implicit pad`), and the three are timed in alternation in one process under torch.compile with
inductor freezing (`compression.measure.time_in_alternation`), at batch 1 and 32, on the threads torch has (run
with OMP_NUM_THREADS=1 for one).

    OMP_NUM_THREADS=1 nice python -m bench.long_kernel_conv [--pesto] [--budget-s 4]
"""

from __future__ import annotations

import argparse
import os
from unittest import mock

import torch
import torch.nn.functional as F

from compression.measure import time_in_alternation
from compression.ptq import quantize_int8


class _Head(torch.nn.Module):
    def __init__(self, channels: int, kernel: int, padding: int, flatten: bool):
        super().__init__()
        self.flatten = flatten
        self.front = torch.nn.Conv1d(1, channels, 1)
        self.long = torch.nn.Conv1d(1 if flatten else channels, 1 if flatten else channels, kernel,
                                    padding=padding, bias=False)

    def forward(self, x):
        x = F.leaky_relu(self.front(x), 0.3)
        return self.long(x.flatten(1).unsqueeze(1) if self.flatten else x)


def _models(pesto: bool) -> dict[str, tuple[torch.nn.Module, torch.Tensor]]:
    torch.manual_seed(0)
    models = {"toeplitz": (_Head(3, 1175, 383, flatten=True), torch.randn(64, 1, 264)),
              "conv16x255": (_Head(16, 255, 127, flatten=False), torch.randn(64, 1, 512))}
    if pesto:
        from bench.real_models.pesto_cnn import Pesto

        models["pesto"] = (Pesto().encoder, torch.randn(64, 1, 264))
    return models


def _int8(model: torch.nn.Module, x: torch.Tensor, explicit_padding: bool) -> tuple[torch.nn.Module, dict]:
    report = {}
    calibration = [(x[i:i + 16],) for i in range(0, len(x), 16)]
    if explicit_padding:
        return quantize_int8(model, (x[:4],), calibration, report=report), report
    with mock.patch("compression.ptq.quantize.pad_long_kernels_explicitly", lambda graph: []):
        return quantize_int8(model, (x[:4],), calibration, report=report), report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pesto", action="store_true", help="also time the pretrained PESTO encoder")
    parser.add_argument("--budget-s", type=float, default=4.0, help="timing budget per batch size")
    args = parser.parse_args()
    print(f"threads {torch.get_num_threads()}")
    print("| model | batch | fp32 ms | int8 implicit pad ms | int8 ms | int8 / fp32 | implicit / explicit | load |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (model, x) in _models(args.pesto).items():
        model.eval()
        torch._dynamo.reset()
        explicit, report = _int8(model, x, True)
        implicit, _ = _int8(model, x, False)
        timings = time_in_alternation({"fp32": model, "implicit": implicit, "int8": explicit}, (x[:1],), [1, 32],
                                      compile=True, budget_s=args.budget_s)
        for batch in (1, 32):
            fp32, slow, fast = (timings[key][batch].median_ms for key in ("fp32", "implicit", "int8"))
            print(f"| {name} | {batch} | {fp32:.3f} | {slow:.3f} | {fast:.3f} | {fast / fp32:.2f} | "
                  f"{slow / fast:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)
        print(f"<!-- {name}: explicitly_padded {report.get('explicitly_padded')} -->")


if __name__ == "__main__":
    main()
