from pathlib import Path

import pytest


def _tenant_id(session, name: str) -> str:
    from sqlalchemy import select

    from app.auth.service import create_key
    from app.db.models import Tenant
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        create_key(session, name)
        tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    return tenant.id


@pytest.fixture
def job_id(backend) -> str:
    """A queued job row (its model and dataset are placeholders and its spec is empty: it cannot run)."""
    import io

    from app.db.models import Dataset, Job, Model
    from app.db.session import session_scope
    from app.store.blobs import write_blob
    with session_scope() as session:
        tenant_id = _tenant_id(session, "worker-tests")
        blob = write_blob(session, io.BytesIO(b"x"), 1024)
        model = Model(tenant_id=tenant_id, name="m", blob_id=blob.id, size_bytes=1, sha256="", signature={})
        dataset = Dataset(tenant_id=tenant_id, name="d", blob_id=blob.id, size_bytes=1, sha256="", manifest={})
        session.add_all([model, dataset])
        session.flush()
        job = Job(tenant_id=tenant_id, model_id=model.id, dataset_id=dataset.id, spec={}, time_limit_s=60)
        session.add(job)
        session.flush()
        return job.id


@pytest.fixture
def make_job(backend, example_files):
    """make_job(stages, dataset=None, time_limit_s=120) -> id of a queued job on the digits model, as the API
    would have stored it (the dataset defaults to the digits one)."""
    from app.db.models import Dataset, Job, Model
    from app.db.session import session_scope
    from app.jobs.schemas import JobCreate
    from app.store.blobs import write_file
    from compression.inspect import inspect_npz, inspect_pt2

    def make(stages: list[dict], dataset: Path | None = None, time_limit_s: int = 120,
             evaluation: dict | None = None) -> str:
        model_path, dataset_path = example_files[0], dataset or example_files[1]
        with session_scope() as session:
            tenant_id = _tenant_id(session, "worker-tests")
            model_blob, dataset_blob = write_file(session, model_path, 1 << 20), write_file(session, dataset_path,
                                                                                            1 << 20)
            model = Model(tenant_id=tenant_id, name="digits.pt2", blob_id=model_blob.id,
                          size_bytes=model_blob.size_bytes, sha256=model_blob.sha256,
                          signature=inspect_pt2(model_path).to_json())
            data = Dataset(tenant_id=tenant_id, name="digits.npz", blob_id=dataset_blob.id,
                           size_bytes=dataset_blob.size_bytes, sha256=dataset_blob.sha256,
                           manifest=inspect_npz(dataset_path).to_json())
            session.add_all([model, data])
            session.flush()
            spec = JobCreate.model_validate({"model_id": model.id, "dataset_id": data.id, "stages": stages,
                                             "evaluation": evaluation or {"latency": False, "max_samples": 100}})
            job = Job(tenant_id=tenant_id, model_id=model.id, dataset_id=data.id, spec=spec.model_dump(mode="json"),
                      time_limit_s=time_limit_s)
            session.add(job)
            session.flush()
            return job.id

    return make


@pytest.fixture
def settings(backend, tmp_path_factory):
    """The worker's settings, with a heartbeat quick enough that no other test worker's reaper (the e2e service
    checks for stale heartbeats every 2 s) mistakes a job run here for a lost one, and scratch directories in the
    test's temp dir."""
    from app.config import get_settings
    return get_settings().model_copy(update={"heartbeat_interval_s": 0.5, "progress_interval_s": 0.1,
                                             "sandbox_scratch_dir": tmp_path_factory.mktemp("scratch")})


def load_job(job_id: str):
    from app.db.models import Job
    from app.db.session import session_scope
    with session_scope() as session:
        return session.get(Job, job_id)
