"""On a CPU whose int8 kernels saturate full-range products (no VNNI), int8 models are calibrated to a range the
kernels compute exactly (compression/ptq/int8_kernels.py). oneDNN's `ONEDNN_MAX_CPU_ISA=AVX2` makes any x86
machine take that path, so these run everywhere; ONNX Runtime reads the CPU itself, so for its file only the
choice of range is checked there, not its kernels."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from compression.ptq.int8_kernels import full_range_activations_saturate

ROOT = Path(__file__).resolve().parents[3]


def _probe(tmp_path: Path, isa: str | None) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"), "OMP_NUM_THREADS": "1"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    done = subprocess.run([sys.executable, "-m", "tests.compression.ptq.int8_kernels_probe"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's x86 ISA cap")
def test_a_cpu_without_vnni_gets_7_bit_activations_its_kernels_compute_exactly(tmp_path):
    figures = _probe(tmp_path, "AVX2")
    assert figures["saturate"] and figures["activation_range"] == "0..127"
    # Full-range activations on this path were 3-10 % of the output's range off the Q/DQ graph (0.026 of 0.25 on
    # the frozen-weight-cache probe's CNN); 7-bit ones leave requantization rounding only.
    assert figures["kernel_error"] < 0.005
    assert figures["onnx_reduced_range"] and figures["onnx_max_abs_weight"] <= 64  # ONNX Runtime's 7-bit weights


def test_the_probe_agrees_with_the_cpus_own_flags(tmp_path):
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), None) if Path("/proc/cpuinfo").exists() else None
    if flags is None or "avx2" not in flags:
        pytest.skip("needs an x86 Linux CPU list")
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        pytest.skip("this process's oneDNN ISA is capped by ONEDNN_MAX_CPU_ISA, not by the CPU's flags")
    has_vnni = "avx512_vnni" in flags or "avx_vnni" in flags
    assert full_range_activations_saturate() is not has_vnni
    figures = _probe(tmp_path, None)
    assert figures["activation_range"] == ("0..255" if has_vnni else "0..127")
    assert figures["kernel_error"] < (1e-4 if has_vnni else 0.005)
    assert figures["onnx_reduced_range"] is not has_vnni
