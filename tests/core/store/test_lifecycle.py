import io
from datetime import timedelta

import pytest


@pytest.fixture
def tenant(store):
    """A fresh tenant; its rows go with it when the test ends (before its store)."""
    import uuid

    from core.db.models import Tenant
    from core.db.session import session_scope
    from tests.rows import ensure_tenant
    with session_scope() as session:
        tenant_id = ensure_tenant(session, f"lifecycle-{uuid.uuid4().hex[:6]}")
    yield tenant_id
    with session_scope() as session:
        session.delete(session.get(Tenant, tenant_id))


def _finished_job_with_artifact(tenant_id: str, data: bytes, finished_ago: timedelta) -> tuple[str, str]:
    from core.db.models import Artifact, Job, utcnow
    from core.db.session import session_scope
    from core.store.blobs import write_blob
    with session_scope() as session:
        job = Job(tenant_id=tenant_id, spec={}, time_limit_s=60, status="succeeded",
                  finished_at=utcnow() - finished_ago)
        session.add(job)
        session.flush()
        blob = write_blob(session, tenant_id, io.BytesIO(data))
        session.add(Artifact(tenant_id=tenant_id, job_id=job.id, stage_index=0, name="a", kind="model.pt2",
                             blob_id=blob.id, size_bytes=len(data), sha256=blob.sha256, details={}))
        return job.id, blob.sha256


def test_retention_deletes_old_finished_jobs_with_their_artifacts(store, tenant, settings):
    from core.db.models import Job
    from core.db.session import session_scope
    from core.store.base import blob_key
    from core.store.lifecycle import delete_expired_jobs
    old, old_sha = _finished_job_with_artifact(tenant, b"old artifact", timedelta(days=8))
    new, new_sha = _finished_job_with_artifact(tenant, b"new artifact", timedelta(hours=1))
    assert delete_expired_jobs(settings) == 0  # no retention set: jobs are kept
    assert delete_expired_jobs(settings.model_copy(update={"job_retention_s": 7 * 24 * 3600})) >= 1
    with session_scope() as session:
        assert session.get(Job, old) is None and session.get(Job, new) is not None
    assert not store.exists(blob_key(tenant, old_sha)) and store.exists(blob_key(tenant, new_sha))


def test_expired_uploads_go_with_their_parts(store, tenant):
    from core.db.models import UploadSession, utcnow
    from core.db.session import session_scope
    from core.store.base import part_key
    from core.store.lifecycle import expire_uploads
    with session_scope() as session:
        uploads = [UploadSession(tenant_id=tenant, kind="model", name="m.pt2", size_bytes=3, sha256="0" * 64,
                                 part_bytes=3, expires_at=utcnow() + timedelta(seconds=delta)) for delta in (-1, 600)]
        session.add_all(uploads)
    for upload in uploads:
        store.write(part_key(tenant, upload.id, 0), io.BytesIO(b"abc"))
    assert expire_uploads() >= 1
    assert not store.exists(part_key(tenant, uploads[0].id, 0)) and store.exists(part_key(tenant, uploads[1].id, 0))
    with session_scope() as session:
        assert session.get(UploadSession, uploads[0].id) is None
        session.delete(session.get(UploadSession, uploads[1].id))


def _model_on_new_blob(tenant: str, data: bytes):
    from core.db.models import Model
    from core.db.session import session_scope
    from core.store.blobs import write_blob
    with session_scope() as session:
        blob = write_blob(session, tenant, io.BytesIO(data))
        model = Model(tenant_id=tenant, name="m", blob_id=blob.id, size_bytes=len(data), sha256="", signature={})
        session.add(model)
    return model, blob


def test_a_delete_removes_the_object_only_after_its_commit(store, tenant):
    """The object of a deleted blob goes once the row's removal has committed. It used to go first, so a worker
    killed before the commit left a committed row naming missing bytes (the e2e store check caught one)."""
    from core.db.models import Blob, Model
    from core.db.session import session_scope
    from core.store.blobs import key_of, read_blob, release_blobs
    from core.store.lifecycle import find_orphans
    model, blob = _model_on_new_blob(tenant, b"deleted, then rolled back")
    clean = {"objects_without_rows": 0, "rows_without_objects": 0, "unused_blob_rows": 0}
    with pytest.raises(RuntimeError, match="killed"):
        with session_scope() as session:
            session.delete(session.get(Model, model.id))
            release_blobs(session, [blob.id])
            assert store.exists(key_of(blob))  # nothing is removed before the commit
            raise RuntimeError("killed before the commit")  # the database rolls back as for a dead connection
    with session_scope() as session:
        assert b"".join(read_blob(session.get(Blob, blob.id))) == b"deleted, then rolled back"
    assert find_orphans(0, tenant).counts() == clean
    with session_scope() as session:
        session.delete(session.get(Model, model.id))
        release_blobs(session, [blob.id])
        assert find_orphans(0, tenant).counts() == clean  # in flight: the committed row still has its object
    assert not store.exists(key_of(blob)) and find_orphans(0, tenant).counts() == clean


def test_an_upload_of_the_same_bytes_during_the_last_delete_keeps_its_object(store, tenant):
    """The object is deleted after the commit under the row's lock again: an upload of the same bytes that
    waited for the delete and committed a new row keeps it."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from core.db.models import Blob, Model
    from core.db.session import session_scope
    from core.store.blobs import key_of, read_blob, release_blobs, write_blob
    from core.store.lifecycle import find_orphans
    data = b"deleted and uploaded again at once"
    model, blob = _model_on_new_blob(tenant, data)
    deleted, commit = threading.Event(), threading.Event()

    def delete_and_wait() -> None:
        with session_scope() as session:
            session.delete(session.get(Model, model.id))
            release_blobs(session, [blob.id])
            deleted.set()
            assert commit.wait(30)

    def upload() -> str:
        with session_scope() as session:
            again = write_blob(session, tenant, io.BytesIO(data))
            session.add(Model(tenant_id=tenant, name="again", blob_id=again.id, size_bytes=len(data), sha256="",
                              signature={}))
            return again.id

    with ThreadPoolExecutor(2) as pool:
        deleting = pool.submit(delete_and_wait)
        assert deleted.wait(30)
        uploading = pool.submit(upload)
        with pytest.raises(TimeoutError):
            uploading.result(timeout=0.5)  # waiting for the deleting transaction's lock
        commit.set()
        deleting.result(30)
        again = uploading.result(30)
    with session_scope() as session:
        kept = session.get(Blob, again)
        assert b"".join(read_blob(kept)) == data and store.exists(key_of(kept))
    assert find_orphans(0, tenant).counts() == {"objects_without_rows": 0, "rows_without_objects": 0,
                                                 "unused_blob_rows": 0}


def test_the_check_finds_both_halves_and_the_sweep_removes_strays(store, tenant, settings):
    from sqlalchemy import select

    from core.db.models import Blob, Model
    from core.db.session import session_scope
    from core.store.base import blob_key, staging_key
    from core.store.blobs import key_of, write_blob
    from core.store.lifecycle import find_orphans, sweep
    assert set(find_orphans(tenant_id=tenant).counts().values()) == {0}
    store.write(staging_key(tenant, "cut-off"), io.BytesIO(b"a write a crash cut off"))
    store.write(blob_key(tenant, "f" * 64), io.BytesIO(b"an object whose row was rolled back"))
    with session_scope() as session:
        lost = write_blob(session, tenant, io.BytesIO(b"its object will vanish"))
        session.add(Model(tenant_id=tenant, name="m", blob_id=lost.id, size_bytes=1, sha256="", signature={}))
        unused = write_blob(session, tenant, io.BytesIO(b"nobody uses this"))
    store.delete(key_of(lost))
    orphans = find_orphans(tenant_id=tenant)
    assert sorted(orphans.objects) == [blob_key(tenant, "f" * 64), staging_key(tenant, "cut-off")]
    assert orphans.rows == [lost.id] and orphans.unused == [unused.id]
    # Objects younger than the grace period may be writes in progress.
    assert find_orphans(min_age_s=3600, tenant_id=tenant).counts()["objects_without_rows"] == 0
    sweep(settings.model_copy(update={"store_sweep_grace_s": 0}), tenant_id=tenant)
    after = find_orphans(tenant_id=tenant)
    assert after.objects == [] and after.unused == [] and after.rows == [lost.id]  # reported, never guessed at
    with session_scope() as session:
        assert session.get(Blob, unused.id) is None
        session.delete(session.scalars(select(Model).where(Model.blob_id == lost.id)).one())
        session.delete(session.get(Blob, lost.id))
