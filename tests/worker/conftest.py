import pytest


@pytest.fixture
def job_id(backend) -> str:
    """A queued job row (its model and dataset are placeholders: these tests never run the pipeline)."""
    import io

    from app.auth.service import create_key
    from app.db.models import Dataset, Job, Model, Tenant
    from app.db.session import session_scope
    from app.store.blobs import write_blob
    from sqlalchemy import select
    with session_scope() as session:
        create_key(session, "worker-tests")
        tenant = session.scalar(select(Tenant).where(Tenant.name == "worker-tests"))
        blob = write_blob(session, io.BytesIO(b"x"), 1024)
        model = Model(tenant_id=tenant.id, name="m", blob_id=blob.id, size_bytes=1, sha256="", signature={})
        dataset = Dataset(tenant_id=tenant.id, name="d", blob_id=blob.id, size_bytes=1, sha256="", manifest={})
        session.add_all([model, dataset])
        session.flush()
        job = Job(tenant_id=tenant.id, model_id=model.id, dataset_id=dataset.id, spec={}, time_limit_s=60)
        session.add(job)
        session.flush()
        return job.id
