import uuid

import pytest
from fastapi.testclient import TestClient


@pytest.fixture(scope="session")
def api(backend):
    from app.main import create_app
    with TestClient(create_app()) as client:
        yield client


def new_key(tenant: str | None = None) -> str:
    from app.auth.service import create_key
    from core.db.session import session_scope
    with session_scope() as session:
        return create_key(session, tenant or f"tenant-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def auth(api) -> dict:
    return {"Authorization": f"Bearer {new_key()}"}


@pytest.fixture
def uploaded(api, auth, example_files) -> dict:
    model_path, dataset_path = example_files
    model = api.post("/v1/models", headers=auth, files={"file": ("digits.pt2", model_path.read_bytes())})
    dataset = api.post("/v1/datasets", headers=auth, files={"file": ("digits.npz", dataset_path.read_bytes())})
    assert model.status_code == 201, model.text
    assert dataset.status_code == 201, dataset.text
    return {"model": model.json(), "dataset": dataset.json()}
