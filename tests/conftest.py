import dataclasses
import os
from pathlib import Path

import pytest

# One CPU thread for torch here and in the service processes the tests start: on 2 shared cores, oversubscribed
# OpenMP threads make small models 10-30x slower. Must be set before torch is imported.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.backends import Backend, available_backends, clear_service_caches, reset_database

BACKENDS = available_backends()


@pytest.fixture(scope="session", params=BACKENDS, ids=[b.name for b in BACKENDS])
def backend(request, tmp_path_factory) -> Backend:
    """A migrated database and a broker; the environment points the service code at them."""
    from app.db.migrate import upgrade

    chosen: Backend = request.param
    data_dir = tmp_path_factory.mktemp(f"data-{chosen.name}")
    if chosen.database_url:
        reset_database(chosen.database_url)
    saved = {k: os.environ.get(k) for k in chosen.env(data_dir)}
    os.environ.update(chosen.env(data_dir))
    clear_service_caches()
    from app.config import get_settings
    upgrade(get_settings().resolved_database_url)
    yield dataclasses.replace(chosen, data_dir=data_dir)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    clear_service_caches()


@pytest.fixture(scope="session")
def example_files(tmp_path_factory) -> tuple[Path, Path]:
    """A small CNN trained on scikit-learn digits, exported to .pt2, and its dataset as .npz."""
    from compression.examples import write_digits_example
    return write_digits_example(tmp_path_factory.mktemp("example"))
