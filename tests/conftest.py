import dataclasses
import os
from pathlib import Path

import pytest

# One CPU thread for torch here and in the service processes the tests start: on 2 shared cores, oversubscribed
# OpenMP threads make small models 10-30x slower. Must be set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests import probes
from tests.backends import Backend, available_backends, clear_service_caches, reset_database

BACKENDS = available_backends()
# Tests of backend-independent features that are costly end to end run once, on the production-like backend.
ONE_BACKEND = BACKENDS[-1].name


def pytest_collection_modifyitems(config, items):
    skipped = [item for item in items if item.get_closest_marker("one_backend")
               and getattr(item, "callspec", None) and item.callspec.params.get("backend", None) is not None
               and item.callspec.params["backend"].name != ONE_BACKEND]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [item for item in items if item not in skipped]
    # End-to-end tests last (per backend): their service's worker lives until the backend changes, and tests that
    # keep jobs queued on purpose must not share the database with a live worker.
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
    root = Path(__file__).resolve().parents[1]
    probes.start_collected({Path(str(item.path)).relative_to(root).as_posix() for item in items})


def pytest_sessionfinish(session, exitstatus):
    probes.stop_all()


@pytest.fixture(scope="session", params=BACKENDS, ids=[b.name for b in BACKENDS])
def backend(request, tmp_path_factory) -> Backend:
    """A migrated database and a broker; the environment points the service code at them."""
    from core.db.migrate import upgrade

    chosen: Backend = request.param
    data_dir = tmp_path_factory.mktemp(f"data-{chosen.name}")
    if chosen.database_url:
        reset_database(chosen.database_url)
    saved = {k: os.environ.get(k) for k in chosen.env(data_dir)}
    os.environ.update(chosen.env(data_dir))
    clear_service_caches()
    from core.config import get_settings
    upgrade(get_settings().resolved_database_url)
    yield dataclasses.replace(chosen, data_dir=data_dir)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    clear_service_caches()


@pytest.fixture(scope="session")
def s3_server():
    from tests.stores import MotoServer
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture(params=["file", "s3"])
def store(request, backend, tmp_path):
    """The service's store for one test: the local file store, then an S3 bucket on the moto server."""
    from core.store import get_store
    from tests.stores import environment
    if request.param == "file":
        values = {"MODELPRESS_STORE_URL": (tmp_path / "store").as_uri()}
    else:
        values = request.getfixturevalue("s3_server").env(prefix=tmp_path.name)
    with environment(values):
        store = get_store()
        store.ensure_ready()
        yield store


@pytest.fixture(scope="session")
def example_files(tmp_path_factory) -> tuple[Path, Path]:
    """A small CNN trained on scikit-learn digits, exported to .pt2, and its dataset as .npz."""
    from compression.examples import write_digits_example
    return write_digits_example(tmp_path_factory.mktemp("example"))


@pytest.fixture
def job_id(backend) -> str:
    """A queued job row (its model and dataset are placeholders and its spec is empty: it cannot run)."""
    import io

    from core.db.models import Dataset, Job, Model
    from core.db.session import session_scope
    from core.store.blobs import write_blob
    from tests.rows import ensure_tenant
    with session_scope() as session:
        tenant_id = ensure_tenant(session, "worker-tests")
        blob = write_blob(session, tenant_id, io.BytesIO(b"x"))
        model = Model(tenant_id=tenant_id, name="m", blob_id=blob.id, size_bytes=1, sha256="", signature={})
        dataset = Dataset(tenant_id=tenant_id, name="d", blob_id=blob.id, size_bytes=1, sha256="", manifest={})
        session.add_all([model, dataset])
        session.flush()
        job = Job(tenant_id=tenant_id, model_id=model.id, dataset_id=dataset.id, spec={}, time_limit_s=60)
        session.add(job)
        session.flush()
        return job.id


@pytest.fixture
def settings(backend, tmp_path_factory):
    """The worker's settings, with a heartbeat quick enough that no other test worker's reaper (the e2e service
    checks for stale heartbeats every 2 s) mistakes a job run here for a lost one, and scratch directories in the
    test's temp dir."""
    from core.config import get_settings
    return get_settings().model_copy(update={"heartbeat_interval_s": 0.5, "progress_interval_s": 0.1,
                                             "sandbox_scratch_dir": tmp_path_factory.mktemp("scratch")})
