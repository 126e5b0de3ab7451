"""The zygote answers Inductor's question about vector instruction sets once, for every job it forks."""

import os
import tempfile
from pathlib import Path

from torch._inductor import cpu_vec_isa

from worker import zygote


def test_the_probe_is_answered_in_a_private_directory_and_kept_for_the_forks(monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/nonexistent/job-cache")
    cpu_vec_isa.valid_vec_isa_list.cache_clear()
    cpu_vec_isa.VecISA._VecISA__bool__impl.cache_clear()
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("modelpress-zygote-*"))
    zygote.probe_vector_instructions()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == "/nonexistent/job-cache"  # as it was: the job's own
    assert set(temp.glob("modelpress-zygote-*")) == before  # the probe's libraries are gone with their directory
    kept = cpu_vec_isa.valid_vec_isa_list.cache_info().currsize
    if kept:  # a fork asks no compiler: the answer is already in its memory
        assert cpu_vec_isa.valid_vec_isa_list() and cpu_vec_isa.valid_vec_isa_list.cache_info().hits >= 1
    else:  # no usable compiler here: nothing false is kept, each job asks again
        assert cpu_vec_isa.valid_vec_isa_list.cache_info().misses == 0



def test_a_given_probe_directory_keeps_the_built_probes_for_the_next_zygote(tmp_path):
    probe_dir = tmp_path / "zygote"
    probe_dir.mkdir(mode=0o700)
    cpu_vec_isa.valid_vec_isa_list.cache_clear()
    cpu_vec_isa.VecISA._VecISA__bool__impl.cache_clear()  # each set's own answer, kept by the test above
    zygote.probe_vector_instructions(str(probe_dir))
    if cpu_vec_isa.valid_vec_isa_list.cache_info().currsize:
        assert list(probe_dir.rglob("*.so"))  # built once; a later zygote only loads them
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ or os.environ["TORCHINDUCTOR_CACHE_DIR"] != str(probe_dir)
