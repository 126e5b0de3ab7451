"""The worker reads what the sandboxed child names in its scratch directory: plain files inside it, nothing else."""

import os

import pytest

from worker.messages import LineReader, ProtocolError, checkpoint_file, encode
from worker.scratch import UnsafeOutput, open_output


@pytest.fixture
def scratch(tmp_path):
    (tmp_path / "scratch" / "out").mkdir(parents=True)
    (tmp_path / "scratch" / "out" / "model.pt2").write_bytes(b"weights")
    (tmp_path / "secret").write_text("the database")
    return tmp_path / "scratch"


def test_a_plain_file_inside_the_scratch_directory_is_read(scratch):
    with open_output(scratch, "out/model.pt2") as file:
        assert file.read() == b"weights"


@pytest.mark.parametrize("plant, name", [
    (lambda s: (s / "out" / "link").symlink_to(s.parent / "secret"), "out/link"),
    (lambda s: (s / "dir").symlink_to(s.parent), "dir/secret"),
    (lambda s: os.link(s.parent / "secret", s / "out" / "hard"), "out/hard"),
    (lambda s: os.mkfifo(s / "out" / "fifo"), "out/fifo"),
    (lambda s: None, "../secret"),
    (lambda s: None, str("/etc/passwd")),
    (lambda s: None, "out"),
    (lambda s: None, "out/missing"),
])
def test_anything_but_its_own_plain_file_is_refused(scratch, plant, name):
    plant(scratch)
    with pytest.raises(UnsafeOutput):
        with open_output(scratch, name):
            pass


def test_messages_are_lines_of_bounded_length():
    reader = LineReader(max_bytes=64)
    line = encode("progress", step=1)
    assert reader.feed(line[:5]) == [] and reader.feed(line[5:] + line) == [{"type": "progress", "step": 1}] * 2
    with pytest.raises(ProtocolError):
        reader.feed(b"x" * 65)
    with pytest.raises(ProtocolError):
        LineReader().feed(b'["not", "an", "object"]\n')
    assert checkpoint_file("0:qat/train") == "0%3Aqat%2Ftrain"
    with pytest.raises(ProtocolError):
        checkpoint_file("..")


def test_precompiled_headers_are_lent_read_only(settings, tmp_path):
    from worker.compile_cache import SANDBOX_LOGNAME, lend_headers
    from worker.scratch import job_scratch, sandbox_identity
    source = tmp_path / "headers"
    source.mkdir()
    (source / "abc.h").write_text("#include <cpp_prefix.h>\n")
    (source / "abc.h.gch").write_bytes(b"precompiled")
    (source / "evil.h").symlink_to(tmp_path / "elsewhere")
    identity = sandbox_identity(settings)
    with job_scratch(settings, identity, "job_lend") as scratch:
        lend_headers(scratch, identity, source)
        target = scratch / "tmp" / f"torchinductor_{SANDBOX_LOGNAME}" / "precompiled_headers"
        assert sorted(p.name for p in target.iterdir()) == ["abc.h", "abc.h.gch"]
        lent = (target / "abc.h.gch").stat()
        assert lent.st_ino == (source / "abc.h.gch").stat().st_ino and lent.st_uid == os.geteuid()
        if identity.uid is not None:  # the job may add its own variants, never change the worker's
            assert target.stat().st_uid == identity.uid and not lent.st_mode & 0o022
