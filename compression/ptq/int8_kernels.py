"""Whether this CPU's int8 kernels saturate on full-range (8-bit) activations, and what an artifact says about it.

Why: an x86 CPU without VNNI (AVX2 or AVX-512 without DL Boost: AMD before Zen 4, Intel before Cascade Lake)
multiplies uint8 activations by int8 weights with `vpmaddubsw`, which adds each pair of products into an int16
and saturates: 255 * 127 * 2 = 64,770 does not fit in 32,767. oneDNN (the `.pt2`'s compiled kernels) and ONNX
Runtime both take that path there, so a model calibrated for 0..255 activations computes something other than
its Q/DQ graph. Calibrating activations to 0..127 (`PTQSpec.reduce_range`, PyTorch's `reduce_range`) keeps every
pair sum within int16 (127 * 127 * 2 = 32,258), at one bit less activation resolution everywhere.

Which costs more depends on the model, so full range stays the default and the job warns where its own worker
saturates (its figures are the compiled model's, saturation included). `bench/int8_no_vnni.py` on real models,
oneDNN capped to AVX2: MiniLM's compiled outputs were up to 1.04x their range off the Q/DQ graph at full range
yet kept cosine 0.992 to fp32, while 0..127 (0.07 off, no saturation) gave cosine 0.979; PESTO: 0.37x off, top-1 0.992
either way (0.988 at 0..127). A small test CNN was 4.9 % of its output range off (0.15 % at 0..127).

The question is answered by running the kernel, not by reading CPU flags: a uint8 x int8 product whose exact
result is known comes back exact or saturated, whatever the CPU, the hypervisor's flags or `ONEDNN_MAX_CPU_ISA`
say (tests/compression/ptq/test_int8_kernels.py runs it under `ONEDNN_MAX_CPU_ISA=AVX2`).
"""

from __future__ import annotations

import functools

import torch

FULL_RANGE_NOTE = "uint8 affine, per tensor, calibrated to 0..255 (exact on x86 CPUs with VNNI)"
REDUCED_RANGE_NOTE = "uint8 affine, per tensor, calibrated to 0..127 (reduce_range: exact on any x86 CPU)"
SATURATION_WARNING = ("this worker's CPU has no VNNI: its int8 kernels saturate full-range (0..255) activations, so "
                      "the figures measured here include that error, which CPUs with VNNI do not make; "
                      "'reduce_range': true calibrates to 0..127 instead, exact on any x86 CPU at one bit less "
                      "activation resolution")


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


def activation_range_note(reduce_range: bool) -> str:
    """The activations' description for an int8 artifact."""
    return REDUCED_RANGE_NOTE if reduce_range else FULL_RANGE_NOTE
