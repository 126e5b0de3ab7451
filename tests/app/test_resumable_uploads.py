import hashlib
import io

import numpy as np
import pytest

MIB = 1024**2


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def dataset_bytes() -> bytes:
    """A valid dataset of about 2.5 MiB: three parts of 1 MiB."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(buffer, **{"train.x": rng.standard_normal((10_000, 64), dtype=np.float32),
                        "train.y": rng.integers(0, 10, 10_000), "val.x": rng.standard_normal((200, 64), np.float32),
                        "val.y": rng.integers(0, 10, 200)})
    return buffer.getvalue()


def _start(api, auth, data: bytes, **fields):
    response = api.post("/v1/uploads", headers=auth, json={"kind": "dataset", "name": "big.npz",
                                                           "size_bytes": len(data), "sha256": _sha(data),
                                                           "part_bytes": MIB, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def _put(api, auth, upload_id: str, number: int, data: bytes, checksum: str | None = None):
    return api.put(f"/v1/uploads/{upload_id}/parts/{number}", content=data,
                   headers={**auth, "X-Checksum-SHA256": checksum or _sha(data)})


def test_parts_in_any_order_resume_and_complete_once(store, api, auth, dataset_bytes):
    data = dataset_bytes
    upload = _start(api, auth, data)
    assert upload["parts_total"] == 3 and upload["parts_received"] == [] and upload["result"] is None
    parts = [data[i * MIB:(i + 1) * MIB] for i in range(3)]
    assert _put(api, auth, upload["id"], 2, parts[2]).status_code == 200
    assert _put(api, auth, upload["id"], 0, parts[0]).status_code == 200
    assert _put(api, auth, upload["id"], 0, parts[0]).status_code == 200  # a retry replaces it
    corrupt = _put(api, auth, upload["id"], 1, parts[1][:-1] + b"\0", checksum=_sha(parts[1]))
    assert corrupt.status_code == 422 and "send it again" in corrupt.json()["detail"]
    short = _put(api, auth, upload["id"], 1, parts[1][:1000])
    assert short.status_code == 422 and f"{MIB} expected" in short.json()["detail"]
    # The connection dropped: the client asks what arrived and sends the rest.
    state = api.get(f"/v1/uploads/{upload['id']}", headers=auth).json()
    assert state["parts_received"] == [0, 2] and state["bytes_received"] == MIB + len(parts[2])
    missing = api.post(f"/v1/uploads/{upload['id']}/complete", headers=auth)
    assert missing.status_code == 409 and "lacks 1 part(s): 1" in missing.json()["detail"]
    assert _put(api, auth, upload["id"], 1, parts[1]).status_code == 200
    done = api.post(f"/v1/uploads/{upload['id']}/complete", headers=auth)
    assert done.status_code == 200, done.text
    dataset = done.json()["result"]
    assert dataset["sha256"] == _sha(data) and dataset["manifest"]["splits"]["train"]["x"]["shape"] == [10_000, 64]
    assert api.post(f"/v1/uploads/{upload['id']}/complete", headers=auth).json()["result"]["id"] == dataset["id"]
    assert api.get(f"/v1/datasets/{dataset['id']}", headers=auth).status_code == 200
    tenant_objects = {o.key.split("/")[2] for o in store.list("tenants/")}
    assert "uploads" not in tenant_objects  # the parts are gone; the blob stays
    assert api.delete(f"/v1/datasets/{dataset['id']}", headers=auth).status_code == 204


def test_a_file_that_is_not_what_it_claims_is_refused(store, api, auth, dataset_bytes):
    junk = b"not an npz archive" * 1000
    upload = _start(api, auth, junk)
    assert _put(api, auth, upload["id"], 0, junk).status_code == 200
    refused = api.post(f"/v1/uploads/{upload['id']}/complete", headers=auth)
    assert refused.status_code == 422 and refused.json()["detail"].startswith("big.npz:")
    lying = _start(api, auth, dataset_bytes[:MIB], sha256="0" * 64)
    assert _put(api, auth, lying["id"], 0, dataset_bytes[:MIB]).status_code == 200
    wrong = api.post(f"/v1/uploads/{lying['id']}/complete", headers=auth)
    assert wrong.status_code == 422 and "not the 000" in wrong.json()["detail"]
    assert api.delete(f"/v1/uploads/{lying['id']}", headers=auth).status_code == 204
    assert api.get(f"/v1/uploads/{lying['id']}", headers=auth).status_code == 404


@pytest.mark.parametrize("fields, status, text", [
    ({"size_bytes": 10**13}, 413, "over the limit"), ({"part_bytes": 1000}, 422, "part_bytes"),
    ({"part_bytes": 10**10}, 422, "at most"), ({"sha256": "xyz"}, 422, "sha256"),
])
def test_sessions_are_checked_when_created(api, auth, fields, status, text):
    body = {"kind": "model", "name": "m.pt2", "size_bytes": 5 * MIB, "sha256": "a" * 64, **fields}
    response = api.post("/v1/uploads", headers=auth, json=body)
    assert response.status_code == status and text in response.text


def test_a_part_over_the_part_limit_is_cut_off_with_413(api, auth):
    from core.config import get_settings
    upload = _start(api, auth, b"x" * 3 * MIB)
    too_big = b"x" * (get_settings().upload_part_max_bytes + 1)
    response = _put(api, auth, upload["id"], 0, too_big)
    assert response.status_code == 413 and "MODELPRESS_UPLOAD_PART_MAX_BYTES" in response.json()["detail"]
