"""Schema version checks: the API and the worker refuse to run on a database that is not at the latest revision."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


class SchemaNotReady(RuntimeError):
    pass


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def ensure_schema(engine: Engine, database_url: str, auto_migrate: bool) -> None:
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if auto_migrate:
        upgrade(database_url)
        return
    raise SchemaNotReady(f"the database is at schema revision {current or 'none (empty)'} but this version needs "
                         f"{head}; run `modelpress migrate` (with the same MODELPRESS_DATABASE_URL) first")
