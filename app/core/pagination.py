"""Query parameters shared by every list endpoint."""

from typing import Annotated

from fastapi import Query

# Bounded so that no offset can overflow the database's 64-bit integers (that would be a 500, not an empty page).
MAX_OFFSET = 1_000_000_000

Limit = Annotated[int, Query(ge=1, le=200, description="Items per page (1-200).")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description=f"Items to skip (0-{MAX_OFFSET:,}).")]
