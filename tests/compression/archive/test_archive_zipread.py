import io
import zipfile

import pytest

from compression.archive import ArchiveLimits, InvalidUpload
from compression.archive.zipread import BoundedZip, NotAZip
from tests.hostile.corpus import MiB, append_member, write_zip


def test_an_archive_with_more_entries_than_the_limit_is_refused_before_it_is_parsed():
    data = write_zip({f"a/{i}": b"" for i in range(50)})
    with pytest.raises(InvalidUpload, match="lists 50 entries"):
        BoundedZip(io.BytesIO(data), ArchiveLimits(max_entries=49), "x")
    assert len(BoundedZip(io.BytesIO(data), ArchiveLimits(max_entries=50), "x").members) == 50


def test_a_non_zip_is_reported_as_such():
    with pytest.raises(NotAZip):
        BoundedZip(io.BytesIO(b"not a zip"), ArchiveLimits(), "x")


@pytest.mark.parametrize("name, reason", [("/etc/passwd", "absolute"), ("C:/x", "absolute"), ("a\\b", "absolute"),
                                          ("a/../../b", "'..'"), ("a//b", "empty"), ("a/./b", "'.'")])
def test_entry_names_must_be_relative_paths(name, reason):
    with pytest.raises(InvalidUpload, match=reason):
        BoundedZip(io.BytesIO(write_zip({name: b"x"})), ArchiveLimits(), "x")


def test_duplicate_entries_are_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a/x", b"1")
        with pytest.warns(UserWarning):
            archive.writestr("a/x", b"2")
    with pytest.raises(InvalidUpload, match="appears twice"):
        BoundedZip(io.BytesIO(buffer.getvalue()), ArchiveLimits(), "x")


def test_sizes_are_counted_not_read_from_headers():
    """A deflated member whose header claims 1 byte still counts (and trips the cap) by what it expands to."""
    data = append_member(write_zip({"a/b": b""}), "a/bomb", b"", 3 * MiB)
    info_offset = data.rfind(b"PK\x01\x02")  # central directory entry of the bomb: claim a tiny size
    patched = bytearray(data)
    patched[info_offset + 24:info_offset + 28] = (1).to_bytes(4, "little")
    archive = BoundedZip(io.BytesIO(bytes(patched)), ArchiveLimits(max_member_bytes=2 * MiB), "x")
    with pytest.raises(InvalidUpload, match="damaged|larger than"):
        archive.count("a/bomb")
    archive = BoundedZip(io.BytesIO(data), ArchiveLimits(max_member_bytes=2 * MiB), "x")
    with pytest.raises(InvalidUpload, match="'a/bomb' is larger than 2097152 bytes"):
        archive.count("a/bomb")


def test_the_archive_total_is_capped_across_members():
    data = write_zip({f"a/{i}": bytes(MiB) for i in range(3)})
    archive = BoundedZip(io.BytesIO(data), ArchiveLimits(max_total_bytes=2 * MiB + 1), "x")
    archive.count("a/0")
    archive.count("a/1")
    with pytest.raises(InvalidUpload, match="past 2097153 uncompressed bytes"):
        archive.count("a/2")


def test_a_corrupted_member_names_its_entry():
    data = bytearray(write_zip({"a/b": b"hello world" * 100}))
    data[data.find(b"hello") + 3] ^= 0xFF
    with pytest.raises(InvalidUpload, match="'a/b' is damaged"):
        BoundedZip(io.BytesIO(bytes(data)), ArchiveLimits(), "x").count("a/b")
