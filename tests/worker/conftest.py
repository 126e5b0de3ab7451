from pathlib import Path

import pytest

from tests.rows import ensure_tenant


@pytest.fixture
def make_job(backend, example_files):
    """make_job(stages, dataset=None, time_limit_s=120) -> id of a queued job on the digits model, as the API
    would have stored it (the dataset defaults to the digits one)."""
    from compression.inspect import inspect_npz, inspect_pt2
    from core.db.models import Dataset, Job, Model
    from core.db.session import session_scope
    from core.jobs.spec import JobCreate
    from core.store.blobs import write_file

    def make(stages: list[dict], dataset: Path | None = None, time_limit_s: int = 120,
             evaluation: dict | None = None, manifest_of: Path | None = None) -> str:
        """`manifest_of`: the file the dataset's stored manifest is read from (default: the dataset itself), for
        a dataset stored before an upload check that would now refuse it."""
        model_path, dataset_path = example_files[0], dataset or example_files[1]
        with session_scope() as session:
            tenant_id = ensure_tenant(session, "worker-tests")
            model_blob = write_file(session, tenant_id, model_path)
            dataset_blob = write_file(session, tenant_id, dataset_path)
            model = Model(tenant_id=tenant_id, name="digits.pt2", blob_id=model_blob.id,
                          size_bytes=model_blob.size_bytes, sha256=model_blob.sha256,
                          signature=inspect_pt2(model_path).to_json())
            data = Dataset(tenant_id=tenant_id, name="digits.npz", blob_id=dataset_blob.id,
                           size_bytes=dataset_blob.size_bytes, sha256=dataset_blob.sha256,
                           manifest=inspect_npz(manifest_of or dataset_path).to_json())
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


def load_job(job_id: str):
    from core.db.models import Job
    from core.db.session import session_scope
    with session_scope() as session:
        return session.get(Job, job_id)
