"""Probe scripts that tests run in fresh processes (a capped oneDNN ISA, a private Inductor cache), started in the
background as soon as the tests that read them are collected.

Each probe is a single-threaded process that mostly compiles (about 20 s each on an idle 2-core machine); run when
its test came up, it held the suite for that long while the machine's second core sat idle. Started at collection,
it runs beside the other tests, and its test only reads the figures it printed (its last stdout line, JSON).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Probe:
    module: str  # run as `python -m <module>` from the repository root
    tests: str  # the test file that reads its figures: the probe starts only when that file is collected
    env: tuple[tuple[str, str], ...] = ()  # set on top of this process's environment
    unset: tuple[str, ...] = ()  # removed from it


PROBES = {
    "int8_kernels_avx2": Probe("tests.compression.ptq.int8_kernels_probe",
                               "tests/compression/ptq/test_int8_kernels.py", (("ONEDNN_MAX_CPU_ISA", "AVX2"),)),
    "int8_kernels_native": Probe("tests.compression.ptq.int8_kernels_probe",
                                 "tests/compression/ptq/test_int8_kernels.py", unset=("ONEDNN_MAX_CPU_ISA",)),
    "frozen_weight_cache": Probe("tests.compression.frozen_weight_cache_probe",
                                 "tests/compression/test_frozen_weight_cache.py"),
}
_started: dict[str, tuple[subprocess.Popen, tempfile.TemporaryDirectory]] = {}
_results: dict[str, dict] = {}


def start(name: str) -> None:
    """Start probe `name` once, with its own Inductor cache (a capped ISA's kernels must not reach other tests)."""
    if name in _started:
        return
    probe = PROBES[name]
    scratch = tempfile.TemporaryDirectory(prefix=f"probe-{name}-")
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(Path(scratch.name) / "inductor"), "OMP_NUM_THREADS": "1",
           **dict(probe.env)}
    for key in probe.unset:
        env.pop(key, None)
    process = subprocess.Popen([sys.executable, "-m", probe.module], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    _started[name] = (process, scratch)


def start_collected(paths: set[str]) -> None:
    """Start every probe whose test file is among the collected `paths` (relative to the repository root). Under
    pytest-xdist every test process collects every test and the cores are busy anyway: each probe then starts in
    the process that runs its test, when the test asks for its figures."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    for name, probe in PROBES.items():
        if probe.tests in paths:
            start(name)


def figures(name: str, timeout: float = 600) -> dict:
    """The JSON probe `name` printed last (started now if collection did not start it)."""
    if name not in _results:
        start(name)
        process, scratch = _started[name]
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        finally:
            scratch.cleanup()
        assert process.returncode == 0, stderr[-3000:]
        _results[name] = json.loads(stdout.strip().splitlines()[-1])
    return _results[name]


def stop_all() -> None:
    for process, scratch in _started.values():
        if process.poll() is None:
            process.kill()
            process.wait()
        scratch.cleanup()
