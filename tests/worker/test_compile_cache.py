"""Compile caches are kept per kind of CPU (worker.compile_cache.cpu_kind): graphs compiled under one instruction
set crashed a job run under another with heap corruption, so a changed CPU or cap must never find the old cache."""

from worker.compile_cache import cpu_kind, kind_root, tenant_cache
from worker.scratch import sandbox_identity

AVX512_CPU = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC 9R45
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
bogomips\t: 5200.00

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni
"""
AVX2_CPU = AVX512_CPU.replace(" avx512f avx512_vnni", "")


def test_the_kind_changes_with_the_cpu_and_with_an_instruction_set_cap():
    native = cpu_kind({}, AVX512_CPU)
    assert cpu_kind({}, AVX512_CPU) == native
    assert cpu_kind({"PATH": "/bin", "OMP_NUM_THREADS": "1"}, AVX512_CPU) == native  # unrelated settings
    assert cpu_kind({}, AVX512_CPU.replace("5200.00", "5187.11")) == native  # clock readings move
    assert cpu_kind({}, AVX2_CPU) != native
    assert cpu_kind({}, AVX512_CPU.replace("9R45", "9R14")) != native
    capped = {cpu_kind({"ATEN_CPU_CAPABILITY": "avx2"}, AVX512_CPU),
              cpu_kind({"ONEDNN_MAX_CPU_ISA": "AVX2"}, AVX512_CPU),
              cpu_kind({"DNNL_MAX_CPU_ISA": "AVX2"}, AVX512_CPU)}
    assert len(capped) == 3 and native not in capped


def test_a_worker_whose_jobs_get_a_cap_uses_another_tenant_cache(settings, monkeypatch):
    identity = sandbox_identity(settings)
    native = tenant_cache(settings, identity, "tenant-a")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert tenant_cache(settings, identity, "tenant-a") == native  # not passed to the jobs: they run uncapped
    capped_settings = settings.model_copy(update={"sandbox_pass_env": ["ATEN_CPU_CAPABILITY"]})
    capped = tenant_cache(capped_settings, identity, "tenant-a")
    assert capped != native and capped.name == native.name and capped.is_dir()
    assert kind_root(capped_settings) == capped.parent != kind_root(settings)
    assert (kind_root(settings).stat().st_mode & 0o777) == 0o711
