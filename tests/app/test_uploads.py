import io

import numpy as np
import pytest


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_model_upload_reads_the_signature_and_round_trips(api, auth, example_files):
    data = example_files[0].read_bytes()
    created = api.post("/v1/models", headers=auth, files={"file": ("digits.pt2", data)})
    assert created.status_code == 201, created.text
    model = created.json()
    import hashlib
    assert model["sha256"] == hashlib.sha256(data).hexdigest() and model["size_bytes"] == len(data)
    assert model["signature"]["inputs"][0]["shape"] == [None, 1, 8, 8]
    assert model["signature"]["outputs"][0]["shape"] == [None, 10]
    assert api.get(f"/v1/models/{model['id']}", headers=auth).json() == model
    assert [m["id"] for m in api.get("/v1/models", headers=auth).json()["items"]] == [model["id"]]
    assert api.delete(f"/v1/models/{model['id']}", headers=auth).status_code == 204
    assert api.get(f"/v1/models/{model['id']}", headers=auth).status_code == 404


@pytest.mark.parametrize("content, expected", [
    (b"", "empty"),
    (b"definitely not a zip archive", "not a .pt2 archive"),
])
def test_bad_model_files_are_refused_with_a_reason(api, auth, content, expected):
    response = api.post("/v1/models", headers=auth, files={"file": ("m.pt2", content)})
    assert response.status_code == 422
    assert expected in response.json()["detail"]


def test_truncated_model_is_refused(api, auth, example_files):
    data = example_files[0].read_bytes()
    for cut in (len(data) // 2, len(data) - 10):
        response = api.post("/v1/models", headers=auth, files={"file": ("m.pt2", data[:cut])})
        assert response.status_code == 422, response.text
        assert "torch.export.save" in response.json()["detail"] or "truncated" in response.json()["detail"]


def test_npz_without_the_model_archive_is_not_a_model(api, auth):
    response = api.post("/v1/models", headers=auth, files={"file": ("m.pt2", _npz(**{"train.x": np.ones(3)}))})
    assert response.status_code == 422
    assert "models/model.json is missing" in response.json()["detail"]


def test_dataset_upload_reports_splits_and_label_range(api, auth):
    data = _npz(**{"train.x": np.zeros((4, 3), np.float32), "train.y": np.array([0, 2, 1, 2]),
                   "val.x": np.zeros((2, 3), np.float32)})
    response = api.post("/v1/datasets", headers=auth, files={"file": ("d.npz", data)})
    assert response.status_code == 201, response.text
    manifest = response.json()["manifest"]
    assert manifest["splits"]["train"]["x"] == {"shape": [4, 3], "dtype": "float32"}
    assert manifest["label_range"] == {"train": [0, 2]}


def test_whole_number_float_labels_and_label_columns_are_accepted(api, auth):
    data = _npz(**{"train.x": np.zeros((3, 2), np.float32), "train.y": np.array([[1.0], [4.0], [0.0]])})
    response = api.post("/v1/datasets", headers=auth, files={"file": ("d.npz", data)})
    assert response.status_code == 201, response.text
    assert response.json()["manifest"]["label_range"] == {"train": [0, 4]}


@pytest.mark.parametrize("arrays, expected", [
    ({"train.x": np.array([{"a": 1}], dtype=object)}, "Python objects"),
    ({"train.x": np.zeros((0, 3), np.float32)}, "empty"),
    ({"x": np.zeros((2, 3), np.float32)}, "<split>.<input>"),
    ({"train.x": np.zeros((2, 3)), "train.y": np.zeros(3, np.int64)}, "disagree on the number of examples"),
    ({"train.x": np.zeros((2, 3)), "train.y": np.array([1, np.nan], np.float32)}, "hold NaN or Inf at row 1"),
    ({"train.x": np.zeros((2, 3)), "train.y": np.array(["cat", "dog"])}, "are strings"),
    ({"train.x": np.array([[0, np.nan, 0]])}, "'train.x' holds NaN or Inf (first at row 0)"),
    ({"train.y": np.zeros(2, np.int64)}, "labels but no inputs"),
])
def test_bad_datasets_are_refused_with_a_reason(api, auth, arrays, expected):
    response = api.post("/v1/datasets", headers=auth, files={"file": ("d.npz", _npz(**arrays))})
    assert response.status_code == 422, response.text
    assert expected in response.json()["detail"]


def test_size_limits_give_413(api, auth, monkeypatch):
    from core.config import get_settings
    monkeypatch.setattr(get_settings(), "max_dataset_bytes", 1000)
    big = _npz(**{"train.x": np.zeros((100, 10), np.float32)})
    response = api.post("/v1/datasets", headers=auth, files={"file": ("d.npz", big)})
    assert response.status_code == 413
    assert "limit is 1000 bytes" in response.json()["detail"]
