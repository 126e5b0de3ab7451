"""A hostile file that slips past the API: written straight into the store as a model or dataset row."""

from __future__ import annotations

import io


def store_directly(kind: str, data: bytes, like_id: str) -> str:
    """Write `data` as a model/dataset of the same tenant, with the metadata of the clean upload `like_id`."""
    from core.db.models import Dataset, Model
    from core.db.session import session_scope
    from core.store.blobs import write_blob

    table = Model if kind == "model" else Dataset
    with session_scope() as session:
        clean = session.get(table, like_id)
        blob = write_blob(session, clean.tenant_id, io.BytesIO(data))
        metadata = {"signature": clean.signature} if kind == "model" else {"manifest": clean.manifest}
        row = table(tenant_id=clean.tenant_id, name=f"hostile.{kind}", blob_id=blob.id, size_bytes=blob.size_bytes,
                    sha256=blob.sha256, **metadata)
        session.add(row)
        session.flush()
        return row.id
