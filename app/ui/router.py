"""Serves the dashboard's files. The pages hold no data: the browser fetches everything from /v1 with the API key
the user signed in with, so the dashboard sees exactly what the key's tenant may see."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, RedirectResponse

STATIC = Path(__file__).parent / "static"
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
# The pages build the DOM with textContent only and load nothing from elsewhere; the policy makes an injected
# script or a foreign origin inert even if a bug slipped in.
SECURITY_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
                                               "style-src 'self'; frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                    "Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/ui")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/")
def ui_index() -> FileResponse:
    return _file("index.html")


@router.get("/ui/static/{name}")
def ui_static(name: str) -> FileResponse:
    return _file(name)


def _file(name: str) -> FileResponse:
    path = STATIC / name
    # Only the files that ship in the package: no path from the request reaches the filesystem otherwise.
    if name not in _shipped() or path.suffix not in MEDIA_TYPES:
        raise HTTPException(404, f"no dashboard file {name!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=SECURITY_HEADERS)


def _shipped() -> set[str]:
    return {path.name for path in STATIC.iterdir() if path.is_file()}
