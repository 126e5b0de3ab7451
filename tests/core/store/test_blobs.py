import io
import os

import pytest


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 4567])
def test_blobs_round_trip_and_ranges_cross_chunks(backend, size):
    import hashlib

    from core.db.session import session_scope
    from core.store.blobs import delete_blob, read_blob, write_blob
    data = os.urandom(size)
    with session_scope() as session:
        blob = write_blob(session, io.BytesIO(data), chunk_bytes=1000)
        assert blob.size_bytes == size and blob.sha256 == hashlib.sha256(data).hexdigest()
        assert b"".join(read_blob(session, blob)) == data
        if size > 10:
            for start, end in [(0, 0), (5, size - 1), (size // 3, 2 * size // 3), (size - 1, size + 50)]:
                assert b"".join(read_blob(session, blob, start, end)) == data[start:end + 1]
        delete_blob(session, blob.id)
