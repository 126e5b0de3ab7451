"""Where the bytes of uploads, artifacts and checkpoints live: one interface (`base.ObjectStore`), one module per
backend (`local`, `s3`), the database's metadata about them (`blobs`), and the consistency check (`check`)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlparse

from core.config import Settings, get_settings
from core.store.base import ObjectStore


def open_store(settings: Settings) -> ObjectStore:
    url = settings.resolved_store_url
    scheme = urlparse(url).scheme
    if scheme == "file":
        from core.store.local import LocalStore
        return LocalStore(Path(unquote(urlparse(url).path)))
    if scheme == "s3":
        from core.store.s3 import S3Store
        return S3Store(url, settings.store_s3_endpoint_url, settings.store_s3_region,
                       settings.store_s3_access_key_id, settings.store_s3_secret_access_key,
                       settings.store_s3_public_endpoint_url)
    raise ValueError(f"MODELPRESS_STORE_URL {url!r}: use file:///path or s3://bucket[/prefix]")


@lru_cache
def get_store() -> ObjectStore:
    return open_store(get_settings())
