import pytest
from sqlalchemy import inspect

from core.db.migrate import SchemaNotReady, ensure_schema, head_revision
from core.db.session import make_engine


def test_unmigrated_database_is_refused_with_the_command_to_run(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = make_engine(url)
    with pytest.raises(SchemaNotReady, match="run `modelpress migrate`"):
        ensure_schema(engine, url, auto_migrate=False)


def test_embedded_default_migrates_itself(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    engine = make_engine(url)
    ensure_schema(engine, url, auto_migrate=True)
    tables = set(inspect(engine).get_table_names())
    assert {"jobs", "models", "datasets", "artifacts", "blobs", "upload_sessions", "upload_parts", "api_keys",
            "tenants", "job_checkpoints", "idempotency_keys", "alembic_version"} <= tables
    ensure_schema(engine, url, auto_migrate=False)  # now at head: no error


def test_schema_matches_the_models(backend):
    """The migrations create exactly what the ORM models describe (no change left for autogenerate)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from core.db.models import Base
    from core.db.session import get_engine
    with get_engine().connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == head_revision()
        assert compare_metadata(context, Base.metadata) == []


def test_the_idempotency_migration_applies_and_reverts(backend):
    """0002 on the test backend (SQLite, and PostgreSQL when configured): down to 0001 and back up to head."""
    from alembic import command

    from core.config import get_settings
    from core.db.migrate import alembic_config, current_revision
    url = get_settings().resolved_database_url
    # Its own engine: pooled SQLite connections answer PRAGMA-based reflection from a schema cached before the
    # migration ran.
    engine = make_engine(url)
    try:
        command.downgrade(alembic_config(url), "0001")
        try:
            assert current_revision(engine) == "0001"
            assert "idempotency_keys" not in inspect(engine).get_table_names()
        finally:
            command.upgrade(alembic_config(url), "head")
        engine.dispose()
        assert current_revision(engine) == head_revision()
        schema = inspect(engine)
        assert schema.get_pk_constraint("idempotency_keys")["constrained_columns"] == ["tenant_id", "key"]
        assert [i["column_names"] for i in schema.get_indexes("idempotency_keys")] == [["expires_at"]]
        assert schema.get_foreign_keys("idempotency_keys")[0]["options"].get("ondelete") == "CASCADE"
    finally:
        engine.dispose()


def test_the_object_store_migration_moves_blobs_both_ways(backend):
    """0004: down to 0002 puts every blob's bytes back into blob_chunks; up again moves them to the store, and
    blobs with the same bytes in one tenant merge into one row and one object."""
    import io
    import os

    from alembic import command
    from sqlalchemy import text

    from core.config import get_settings
    from core.db.migrate import alembic_config
    from core.db.models import Blob, Model
    from core.db.session import session_scope
    from core.store import get_store
    from core.store.blobs import key_of, read_blob, write_blob
    from tests.rows import ensure_tenant
    url = get_settings().resolved_database_url
    data = os.urandom(2 * 1024**2 + 5)  # more than one chunk
    with session_scope() as session:
        tenant_id = ensure_tenant(session, "migration-0004")
        blob = write_blob(session, tenant_id, io.BytesIO(data))
        model_ids = []
        for _ in range(2):
            model = Model(tenant_id=tenant_id, name="m", blob_id=blob.id, size_bytes=len(data), sha256=blob.sha256,
                          signature={})
            session.add(model)
            session.flush()
            model_ids.append(model.id)
    engine = make_engine(url)
    try:
        command.downgrade(alembic_config(url), "0002")
        get_store().delete(key_of(blob))  # the database alone holds the bytes now
        with engine.begin() as connection:
            chunks = connection.execute(text("SELECT data FROM blob_chunks WHERE blob_id = :b ORDER BY seq"),
                                        {"b": blob.id}).scalars().all()
            assert b"".join(bytes(c) for c in chunks) == data
            # As the old code stored them: one blob per upload, even for the same bytes.
            connection.execute(text("INSERT INTO blobs (id, size_bytes, sha256, chunk_bytes, created_at) "
                                    "SELECT 'blob_copy', size_bytes, sha256, chunk_bytes, created_at FROM blobs "
                                    "WHERE id = :b"), {"b": blob.id})
            connection.execute(text("INSERT INTO blob_chunks (blob_id, seq, data) SELECT 'blob_copy', seq, data "
                                    "FROM blob_chunks WHERE blob_id = :b"), {"b": blob.id})
            connection.execute(text("UPDATE models SET blob_id = 'blob_copy' WHERE id = :m"), {"m": model_ids[1]})
    finally:
        command.upgrade(alembic_config(url), "head")
        engine.dispose()
    with session_scope() as session:
        blob_ids = {session.get(Model, model_id).blob_id for model_id in model_ids}
        assert len(blob_ids) == 1
        moved = session.get(Blob, blob_ids.pop())
        assert b"".join(read_blob(moved)) == data and moved.tenant_id == tenant_id
        for model_id in model_ids:
            session.delete(session.get(Model, model_id))
        from core.store.blobs import release_blobs
        release_blobs(session, [moved.id])
    assert not get_store().exists(key_of(moved))


def test_the_workers_migration_applies_and_reverts(backend):
    """0007 on the test backend: the workers registry and the jobs' routing columns go and come back."""
    from alembic import command
    from alembic.script import ScriptDirectory

    from core.config import get_settings
    from core.db.migrate import alembic_config, current_revision
    url = get_settings().resolved_database_url
    before = ScriptDirectory.from_config(alembic_config(url)).get_revision("0007").down_revision
    engine = make_engine(url)
    try:
        command.downgrade(alembic_config(url), before)
        try:
            assert current_revision(engine) == before
            assert "workers" not in inspect(engine).get_table_names()
            assert "queue" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
        finally:
            command.upgrade(alembic_config(url), "head")
        engine.dispose()
        columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
        assert {"queue", "memory_bytes", "priority", "waiting_reason"} <= columns
        assert inspect(engine).get_pk_constraint("workers")["constrained_columns"] == ["name"]
    finally:
        engine.dispose()
