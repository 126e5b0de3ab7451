"""A CPU whose int8 kernels saturate full-range products (no VNNI) is recognised, and `reduce_range` calibrates
to a range its kernels compute exactly (compression/ptq/int8_kernels.py). oneDNN's `ONEDNN_MAX_CPU_ISA=AVX2`
makes any x86 machine take that path, so these run everywhere; ONNX Runtime reads the CPU itself, so for its file
only the 7-bit weights are checked, not its kernels."""

import os
import platform
from pathlib import Path

import pytest

from compression.ptq.int8_kernels import full_range_activations_saturate
from tests import probes as background


@pytest.fixture(scope="module")
def probes() -> dict:
    """Both probes' figures, capped ISA and the CPU's own (`tests.probes`: started when this file is collected)."""
    return {"AVX2": background.figures("int8_kernels_avx2"), None: background.figures("int8_kernels_native")}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's x86 ISA cap")
def test_a_cpu_without_vnni_is_recognised_and_reduce_range_makes_its_kernels_exact(probes):
    figures = probes["AVX2"]
    assert figures["saturate"]
    # Full range on this path: the compiled CNN was 4.9 % of its output's range off its Q/DQ graph; 0..127
    # activations leave requantization rounding only.
    assert figures["kernel_error_0..255"] > 0.02 and figures["kernel_error_0..127"] < 0.005
    assert figures["onnx_reduced_max_abs_weight"] <= 64  # ONNX Runtime's 7-bit weights


def test_the_probe_agrees_with_the_cpus_own_flags(probes):
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), None) if Path("/proc/cpuinfo").exists() else None
    if flags is None or "avx2" not in flags:
        pytest.skip("needs an x86 Linux CPU list")
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        pytest.skip("this process's oneDNN ISA is capped by ONEDNN_MAX_CPU_ISA, not by the CPU's flags")
    has_vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    assert full_range_activations_saturate() is not has_vnni
    figures = probes[None]
    assert figures["saturate"] is not has_vnni
    if has_vnni:
        assert figures["kernel_error_0..255"] < 1e-4
    assert figures["kernel_error_0..127"] < 0.005
