"""object store: blob bytes move from the blob_chunks table to the configured store (MODELPRESS_STORE_URL)

Each blob becomes an object `tenants/<tenant>/sha256/<hex>` (same bytes stored once per tenant: duplicates merge
into one row), blobs get their tenant, blob_chunks is dropped, and the tables of resumable uploads appear.
Run it with the same MODELPRESS_STORE_URL (and S3 settings) as the services.

Downgrade restores the bytes of every blob into blob_chunks (1 MiB chunks) from the store; the objects stay in
the store, and resumable uploads in progress are dropped with their parts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""
import secrets

import sqlalchemy as sa
from alembic import op

from core.config import get_settings
from core.db.models import new_id, utcnow
from core.store import open_store
from core.store.base import blob_key, staging_key, upload_prefix

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

CHUNK_BYTES = 1024**2
USERS = ("models", "datasets", "artifacts")


class _ChunkReader:
    """A blob's chunks as a readable stream, one chunk query at a time."""

    def __init__(self, connection, blob_id: str):
        self.connection, self.blob_id, self.seq, self.buffer = connection, blob_id, 0, b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            data = self.connection.execute(sa.text("SELECT data FROM blob_chunks WHERE blob_id = :b AND seq = :s"),
                                           {"b": self.blob_id, "s": self.seq}).scalar()
            if data is None:
                break
            self.buffer += bytes(data)
            self.seq += 1
        size = len(self.buffer) if size < 0 else size
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out


def _users(connection) -> list[tuple[str, str, str, dict]]:
    """(table, tenant, blob id, primary key) of every row that uses a blob."""
    rows = [(table, tenant, blob, {"id": row_id}) for table in USERS for row_id, tenant, blob in
            connection.execute(sa.text(f"SELECT id, tenant_id, blob_id FROM {table}"))]
    rows += [("job_checkpoints", tenant, blob, {"job_id": job_id, "name": name}) for job_id, name, blob, tenant in
             connection.execute(sa.text("SELECT c.job_id, c.name, c.blob_id, j.tenant_id FROM job_checkpoints c "
                                        "JOIN jobs j ON j.id = c.job_id"))]
    return rows


def upgrade() -> None:
    connection = op.get_bind()
    store = open_store(get_settings())
    store.ensure_ready()
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tenant_id', sa.String(length=32), nullable=True))

    new_ids: dict[tuple[str, str], str] = {}  # (tenant, old blob id) -> new blob id
    by_sha: dict[tuple[str, str], str] = {}  # (tenant, sha256) -> new blob id
    users = _users(connection)
    for tenant, old_id in sorted({(tenant, blob) for _, tenant, blob, _ in users}):
        staged = staging_key(tenant, secrets.token_hex(16))
        written = store.write(staged, _ChunkReader(connection, old_id))
        key = blob_key(tenant, written.sha256)
        if store.exists(key):
            store.delete(staged)
        else:
            store.move(staged, key)
        if (tenant, written.sha256) not in by_sha:
            by_sha[tenant, written.sha256] = new_id("blob")
            connection.execute(sa.text("INSERT INTO blobs (id, tenant_id, sha256, size_bytes, chunk_bytes, created_at) "
                                       "VALUES (:id, :t, :s, :n, 0, :c)"),
                               {"id": by_sha[tenant, written.sha256], "t": tenant, "s": written.sha256,
                                "n": written.size_bytes, "c": utcnow()})
        new_ids[tenant, old_id] = by_sha[tenant, written.sha256]
    for table, tenant, old_id, key in users:
        where = " AND ".join(f"{column} = :{column}" for column in key)
        connection.execute(sa.text(f"UPDATE {table} SET blob_id = :new WHERE {where}"),
                           {"new": new_ids[tenant, old_id], **key})

    op.drop_table('blob_chunks')
    connection.execute(sa.text("DELETE FROM blobs WHERE tenant_id IS NULL"))  # old rows, and unused blobs
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.drop_column('chunk_bytes')
        batch_op.alter_column('tenant_id', existing_type=sa.String(length=32), nullable=False)
        batch_op.create_index(batch_op.f('ix_blobs_tenant_id'), ['tenant_id'], unique=False)
        batch_op.create_unique_constraint('uq_blobs_tenant_id_sha256', ['tenant_id', 'sha256'])
        batch_op.create_foreign_key('fk_blobs_tenant_id_tenants', 'tenants', ['tenant_id'], ['id'],
                                    ondelete='CASCADE')

    op.create_table('upload_sessions',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('tenant_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('part_bytes', sa.BigInteger(), nullable=False),
    sa.Column('result_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('upload_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_upload_sessions_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_upload_sessions_tenant_id'), ['tenant_id'], unique=False)
    op.create_table('upload_parts',
    sa.Column('session_id', sa.String(length=32), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['upload_sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('session_id', 'number')
    )


def downgrade() -> None:
    connection = op.get_bind()
    store = open_store(get_settings())
    for session_id, tenant in connection.execute(sa.text("SELECT id, tenant_id FROM upload_sessions")):
        store.delete_prefix(upload_prefix(tenant, session_id))
    op.drop_table('upload_parts')
    with op.batch_alter_table('upload_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_upload_sessions_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_upload_sessions_expires_at'))
    op.drop_table('upload_sessions')

    op.create_table('blob_chunks',
    sa.Column('blob_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['blob_id'], ['blobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('blob_id', 'seq')
    )
    chunks = sa.table('blob_chunks', sa.column('blob_id'), sa.column('seq'), sa.column('data', sa.LargeBinary))
    for blob_id, tenant, sha256, size in connection.execute(
            sa.text("SELECT id, tenant_id, sha256, size_bytes FROM blobs")).all():
        buffer, seq, key = b"", 0, blob_key(tenant, sha256)
        if size and not store.exists(key):
            raise RuntimeError(f"blob {blob_id}: its object {key} is missing from {store.url}; nothing can restore "
                               "its bytes into the database. Put the object back, or delete the rows that use the "
                               "blob and the blob's row, then downgrade again")
        for data in (store.read(key) if size else ()):
            buffer += data
            while len(buffer) >= CHUNK_BYTES:
                connection.execute(chunks.insert(), {"blob_id": blob_id, "seq": seq, "data": buffer[:CHUNK_BYTES]})
                buffer, seq = buffer[CHUNK_BYTES:], seq + 1
        if buffer:
            connection.execute(chunks.insert(), {"blob_id": blob_id, "seq": seq, "data": buffer})
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_blobs_tenant_id_tenants', type_='foreignkey')
        batch_op.drop_constraint('uq_blobs_tenant_id_sha256', type_='unique')
        batch_op.drop_index(batch_op.f('ix_blobs_tenant_id'))
        batch_op.add_column(sa.Column('chunk_bytes', sa.Integer(), nullable=False, server_default=str(CHUNK_BYTES)))
        batch_op.drop_column('tenant_id')
    with op.batch_alter_table('blobs', schema=None) as batch_op:
        batch_op.alter_column('chunk_bytes', server_default=None)
