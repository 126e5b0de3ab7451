"""bench.int8_speed runs each timing process with the allocator its row names."""

import os
import subprocess
import sys

import pytest

from bench.int8_speed import JEMALLOC, allocator_environment


def _mapped_libraries(env: dict[str, str]) -> str:
    code = "print(open('/proc/self/maps').read())"
    return subprocess.run([sys.executable, "-c", code], env=os.environ | env, check=True, capture_output=True,
                          text=True).stdout


def test_glibc_rows_preload_nothing():
    assert allocator_environment("glibc") == {}
    assert "jemalloc" not in _mapped_libraries(allocator_environment("glibc"))


@pytest.mark.skipif(JEMALLOC is None, reason="libjemalloc2 is not installed")
def test_jemalloc_rows_run_with_jemalloc_loaded():
    assert "libjemalloc" in _mapped_libraries(allocator_environment("jemalloc"))
