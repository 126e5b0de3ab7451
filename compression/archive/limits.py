"""Caps on what reading one uploaded archive may cost, whatever its headers claim."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1024**2
GiB = 1024**3


@dataclass(frozen=True)
class ArchiveLimits:
    """Every zip (.pt2, .npz and the torch.save archive nested in a .pt2) is read under these caps.

    Sizes are counted on the bytes actually decompressed, never taken from the zip headers.
    """

    max_entries: int = 20_000  # zipfile builds an object per central-directory entry before anything is read
    max_member_bytes: int = 4 * GiB  # one member, uncompressed
    max_total_bytes: int = 8 * GiB  # all members of one archive together, uncompressed
    max_metadata_bytes: int = 32 * MiB  # a JSON or pickle member, which is parsed in memory
    max_json_depth: int = 64  # nesting of JSON objects and lists (torch writes at most ~12)

    def __post_init__(self):
        for name in ("max_entries", "max_member_bytes", "max_total_bytes", "max_metadata_bytes", "max_json_depth"):
            if getattr(self, name) < 1:
                raise ValueError(f"ArchiveLimits.{name} must be positive")


DEFAULT_LIMITS = ArchiveLimits()
