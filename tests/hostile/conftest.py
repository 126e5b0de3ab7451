from pathlib import Path

import pytest

from compression.archive import ArchiveLimits
from tests.hostile.corpus import MiB, write_clean_files

# Caps well below the bombs' 64 MiB, so every bomb trips them in a fraction of a second; the rules are the same
# at the default caps (bench/hostile_uploads.py sends real-size bombs to a service with its defaults).
SMALL_LIMITS = ArchiveLimits(max_member_bytes=16 * MiB, max_total_bytes=32 * MiB, max_metadata_bytes=8 * MiB)


@pytest.fixture(scope="session")
def clean_files(tmp_path_factory) -> dict[str, bytes]:
    return write_clean_files(tmp_path_factory.mktemp("clean"))


@pytest.fixture
def marker(tmp_path) -> Path:
    """Where a payload would write if it ever ran."""
    return tmp_path / "payload-ran"
