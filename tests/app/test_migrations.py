import pytest
from sqlalchemy import inspect

from app.db.migrate import SchemaNotReady, ensure_schema, head_revision
from app.db.session import make_engine


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
    assert {"jobs", "models", "datasets", "artifacts", "blobs", "blob_chunks", "api_keys", "tenants",
            "job_checkpoints", "alembic_version"} <= tables
    ensure_schema(engine, url, auto_migrate=False)  # now at head: no error


def test_schema_matches_the_models(backend):
    """The migrations create exactly what the ORM models describe (no change left for autogenerate)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from app.db.models import Base
    from app.db.session import get_engine
    with get_engine().connect() as connection:
        context = MigrationContext.configure(connection)
        assert context.get_current_revision() == head_revision()
        assert compare_metadata(context, Base.metadata) == []
