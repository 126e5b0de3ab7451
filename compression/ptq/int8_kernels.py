"""Whether this CPU's int8 kernels saturate on full-range (8-bit) activations, and the activation range to
calibrate for when they do.

Why: an x86 CPU without VNNI (AVX2 or AVX-512 without DL Boost: AMD before Zen 4, Intel before Cascade Lake)
multiplies uint8 activations by int8 weights with `vpmaddubsw`, which adds each pair of products into an int16
and saturates: 255 * 127 * 2 = 64,770 does not fit in 32,767. oneDNN (the `.pt2`'s compiled kernels) and ONNX
Runtime (the `onnx_int8` file) both take that path there, so a model calibrated for 0..255 activations computes
something else than it was measured as: on such a CPU a small int8 CNN was 0.026 off its own Q/DQ graph (of
outputs around 0.25) and an int8 encoder 0.09, where CPUs with VNNI agree to float rounding. Calibrating
activations to 0..127 (PyTorch's `reduce_range`) keeps every pair sum within int16: 127 * 127 * 2 = 32,258.

The question is answered by running the kernel, not by reading CPU flags: a uint8 x int8 product whose exact
result is known comes back exact or saturated, whatever the CPU, the hypervisor's flags or `ONEDNN_MAX_CPU_ISA`
say (tests/compression/ptq/test_int8_kernels.py runs it under `ONEDNN_MAX_CPU_ISA=AVX2`).
"""

from __future__ import annotations

import functools

import torch

FULL_RANGE_NOTE = "uint8 affine, per tensor, calibrated to 0..255 (exact on x86 CPUs with VNNI)"
REDUCED_RANGE_NOTE = ("uint8 affine, per tensor, calibrated to 0..127: this worker's CPU has no VNNI, whose int8 "
                      "kernels saturate full-range activations (the file runs correctly on any x86 CPU)")


@functools.cache
def full_range_activations_saturate() -> bool:
    """True when a oneDNN uint8 x int8 linear on this CPU saturates its int16 pair sums (no VNNI). False where
    oneDNN is not built in (no x86 int8 lowering to protect)."""
    if "onednn" not in torch.backends.quantized.supported_engines:
        return False
    before = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = "onednn"
        depth = 64  # 32 pairs of 255 * 127: exact sum 2,072,640; saturated pairs give 32 * 32,767
        x = torch.quantize_per_tensor(torch.full((1, depth), 255.0), 1.0, 0, torch.quint8)
        w = torch.quantize_per_tensor(torch.full((4, depth), 127.0), 1.0, 0, torch.qint8)
        exact = depth * 255 * 127
        # Output scale puts the exact result at 200 of uint8's 255; a saturated one lands near 101.
        y = torch.ops.quantized.linear(x, torch.ops.quantized.linear_prepack(w, None), exact / 200, 0)
        return abs(y.dequantize()[0, 0].item() - exact) > exact / 100
    finally:
        torch.backends.quantized.engine = before


def activation_range_note() -> str:
    """The activations' description for an int8 artifact quantized on this machine."""
    return REDUCED_RANGE_NOTE if full_range_activations_saturate() else FULL_RANGE_NOTE
