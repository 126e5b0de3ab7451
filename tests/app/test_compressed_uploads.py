"""Files compressed as a whole (`tar czf model.tar.gz`, `.tar.xz`, `.tar.bz2`, `gzip rows.jsonl`) are decompressed
at upload, under the upload limit of their kind, and stored and read as the plain file."""

import bz2
import gzip
import hashlib
import lzma

import pytest

from tests.hf_folders import CORPUS, bert_dir, jsonl_bytes, tar_bytes  # noqa: F401 (fixture)

COMPRESSORS = {"gz": gzip.compress, "xz": lzma.compress, "bz2": bz2.compress}


def _upload(api, auth, what: str, name: str, data: bytes, **params):
    return api.post(f"/v1/{what}", headers=auth, params=params, files={"file": (name, data)})


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_folder_packed_as_a_compressed_tar_is_stored_as_its_tar(api, auth, bert_dir, suffix):
    plain = tar_bytes(bert_dir)
    response = _upload(api, auth, "models", f"bert.tar.{suffix}", COMPRESSORS[suffix](plain))
    assert response.status_code == 201, response.text
    model = response.json()
    assert (model["kind"], model["task"]) == ("hf_folder", "feature-extraction")
    assert (model["size_bytes"], model["sha256"]) == (len(plain), hashlib.sha256(plain).hexdigest())


def test_a_gzipped_program_and_a_gzipped_jsonl_dataset_are_read_decompressed(api, auth, example_files):
    model_path, _ = example_files
    model = _upload(api, auth, "models", "digits.pt2.gz", gzip.compress(model_path.read_bytes()))
    assert model.status_code == 201, model.text
    assert model.json()["kind"] == "pt2"
    rows = jsonl_bytes({"train": CORPUS[:8], "val": CORPUS[8:12]})
    dataset = _upload(api, auth, "datasets", "rows.jsonl.gz", gzip.compress(rows))
    assert dataset.status_code == 201, dataset.text
    assert dataset.json()["manifest"]["format"] == "jsonl" and dataset.json()["size_bytes"] == len(rows)


def test_a_bomb_stops_at_the_upload_limit_with_413(api, auth, monkeypatch):
    from core.config import get_settings

    monkeypatch.setattr(get_settings(), "max_model_bytes", 100_000)
    bomb = gzip.compress(bytes(50 * 1024**2))  # 50 MiB of zeros in about 50 kB
    assert len(bomb) < 100_000
    response = _upload(api, auth, "models", "model.tar.gz", bomb)
    assert response.status_code == 413, response.text
    assert "expands past 100000 bytes" in response.json()["detail"]


@pytest.mark.parametrize("data, expected", [
    # mtime=0: the parameter is part of the test's id, which the two xdist processes must collect alike (the header
    # holds the compression time, and CI failed when they collected a second apart)
    (gzip.compress(b"x" * 10_000, mtime=0)[:-40], "damaged or truncated gzip data"),
    (b"\x28\xb5\x2f\xfd" + bytes(64), "zstd-compressed file, which is not read"),
    (gzip.compress(b"", mtime=0), "holds nothing"),
    (b"7z\xbc\xaf\x27\x1c" + bytes(64), "7z archive, which is not read; pack the model folder as a .zip or a .tar"),
    (b"Rar!\x1a\x07\x00" + bytes(64), "RAR archive, which is not read"),
])
def test_damaged_or_unreadable_compression_is_refused_with_the_reason(api, auth, data, expected):
    response = _upload(api, auth, "models", "model.tar.gz", data)
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]


def test_a_resumable_upload_of_a_compressed_folder_completes_as_its_tar(api, auth, bert_dir):
    plain = tar_bytes(bert_dir)
    data = gzip.compress(plain)
    upload = api.post("/v1/uploads", headers=auth, json={"kind": "model", "name": "bert.tar.gz",
                                                         "size_bytes": len(data),
                                                         "sha256": hashlib.sha256(data).hexdigest()}).json()
    part = api.put(f"/v1/uploads/{upload['id']}/parts/0", content=data,
                   headers={**auth, "X-Checksum-SHA256": hashlib.sha256(data).hexdigest()})
    assert part.status_code == 200, part.text
    done = api.post(f"/v1/uploads/{upload['id']}/complete", headers=auth)
    assert done.status_code == 200, done.text
    assert done.json()["result"]["kind"] == "hf_folder" and done.json()["result"]["size_bytes"] == len(plain)
