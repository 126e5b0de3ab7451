import io
import os

import pytest


def _objects(store, tenant_id: str) -> list[str]:
    return sorted(o.key for o in store.list(f"tenants/{tenant_id}/"))


@pytest.fixture
def new_tenant(store):
    """new_tenant(name) -> id of a fresh tenant; its rows go with it when the test ends (before its store)."""
    import uuid

    from core.db.models import Tenant
    from core.db.session import session_scope
    from tests.rows import ensure_tenant
    made = []

    def make(name: str) -> str:
        with session_scope() as session:
            made.append(ensure_tenant(session, f"{name}-{uuid.uuid4().hex[:6]}"))
        return made[-1]
    yield make
    with session_scope() as session:
        for tenant_id in made:
            session.delete(session.get(Tenant, tenant_id))


def test_same_bytes_are_stored_once_per_tenant(store, new_tenant):
    from core.db.models import Model
    from core.db.session import session_scope
    from core.store.base import blob_key
    from core.store.blobs import read_blob, release_blobs, write_blob
    first, second = new_tenant("a"), new_tenant("b")
    data = os.urandom(3000)
    with session_scope() as session:
        blobs = [write_blob(session, tenant, io.BytesIO(data)) for tenant in (first, first, second)]
        assert blobs[0].id == blobs[1].id != blobs[2].id
        assert b"".join(read_blob(blobs[0], 100, 199)) == data[100:200]
        models = [Model(tenant_id=tenant, name="m", blob_id=blob.id, size_bytes=3000, sha256=blob.sha256,
                        signature={}) for tenant, blob in zip((first, first, second), blobs)]
        session.add_all(models)
    sha = blobs[0].sha256
    assert _objects(store, first) == [blob_key(first, sha)] and _objects(store, second) == [blob_key(second, sha)]
    with session_scope() as session:  # one of two users deleted: the blob stays
        session.delete(session.get(Model, models[0].id))
        release_blobs(session, [blobs[0].id])
    assert _objects(store, first) == [blob_key(first, sha)]
    with session_scope() as session:  # the last one: row and object go
        session.delete(session.get(Model, models[1].id))
        release_blobs(session, [blobs[0].id])
    assert _objects(store, first) == [] and _objects(store, second) == [blob_key(second, sha)]


def test_a_rolled_back_write_leaves_no_object(store, new_tenant):
    from core.db.session import session_scope
    tenant = new_tenant("r")
    from core.store.blobs import write_blob
    with pytest.raises(RuntimeError, match="after the write"):
        with session_scope() as session:
            write_blob(session, tenant, io.BytesIO(b"never recorded"))
            raise RuntimeError("failed after the write")
    assert _objects(store, tenant) == []


def test_concurrent_writes_of_the_same_bytes_make_one_blob(store, new_tenant):
    from concurrent.futures import ThreadPoolExecutor

    from core.db.models import Model
    from core.db.session import session_scope
    from core.store.blobs import write_blob
    tenant = new_tenant("c")
    data = os.urandom(20_000)

    def upload(_) -> str:
        with session_scope() as session:
            blob = write_blob(session, tenant, io.BytesIO(data))
            session.add(Model(tenant_id=tenant, name="m", blob_id=blob.id, size_bytes=len(data), sha256=blob.sha256,
                              signature={}))
            return blob.id

    with ThreadPoolExecutor(4) as pool:
        assert len(set(pool.map(upload, range(8)))) == 1
    assert len(_objects(store, tenant)) == 1
