"""A short-lived, bounded memory of which tenant a key hash belongs to, so a poll costs no auth query.

Revocation is not pushed to API processes: a key revoked in the database is refused once its entry expires,
within `auth_cache_ttl_s` seconds (5 by default). Unknown keys are not remembered, so a key is usable the
moment it is created. Used from the event loop only, hence no lock.
"""

from __future__ import annotations

import time

from core.db.models import Tenant


class TenantCache:
    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Tenant]] = {}

    def get(self, key_hash: str) -> Tenant | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        expires_at, tenant = entry
        if time.monotonic() >= expires_at:
            del self._entries[key_hash]
            return None
        return tenant

    def put(self, key_hash: str, tenant: Tenant, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._evict()
        self._entries[key_hash] = (time.monotonic() + ttl_s, tenant)

    def _evict(self) -> None:
        now = time.monotonic()
        for key_hash in [k for k, (expires_at, _) in self._entries.items() if expires_at <= now]:
            del self._entries[key_hash]
        while len(self._entries) >= self.max_entries:  # all still fresh: drop the oldest
            del self._entries[next(iter(self._entries))]


tenant_cache = TenantCache()
