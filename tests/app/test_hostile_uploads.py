"""Every hostile upload is refused at once with a 422 naming the offending entry, and no payload runs."""

import pytest

from tests.hostile.conftest import SMALL_LIMITS
from tests.hostile.corpus import attacks, write_clean_files

ATTACKS = attacks()


@pytest.fixture(scope="module")
def clean_files(tmp_path_factory) -> dict[str, bytes]:
    return write_clean_files(tmp_path_factory.mktemp("clean"))


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "payload-ran"


@pytest.fixture
def small_archive_caps(monkeypatch):
    """The API's archive caps lowered below the corpus's 64 MiB bombs (requests read the cached settings)."""
    from core.config import get_settings
    settings = get_settings()
    for name in ("max_member_bytes", "max_total_bytes", "max_metadata_bytes"):
        monkeypatch.setattr(settings, f"archive_{name}", getattr(SMALL_LIMITS, name))


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_hostile_upload_is_a_422_naming_the_entry(api, auth, attack, clean_files, marker, small_archive_caps):
    data = attack.build(clean_files[attack.kind], marker)
    url = "/v1/models" if attack.kind == "model" else "/v1/datasets"
    response = api.post(url, headers=auth, files={"file": ("upload", data)})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_input" and attack.entry in body["detail"], body
    assert not marker.exists()


def test_signature_lists_the_layers(api, auth, clean_files):
    response = api.post("/v1/models", headers=auth, files={"file": ("m.pt2", clean_files["model"])})
    assert response.status_code == 201, response.text
    assert response.json()["signature"]["layers"] == ["1", "3"]
