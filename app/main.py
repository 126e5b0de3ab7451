"""The FastAPI application: `uvicorn app.main:app` (or `modelpress api`)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app import __doc__ as _app_doc
from app.core.errors import InternalError, install_error_handlers, responses
from app.core.middleware import BodyLimitMiddleware, RejectNulMiddleware
from app.core.openapi import install_openapi
from app.core.overload import install_overload_guard
from app.core.uploads import request_body_limit
from app.jobs.downloads import router as downloads_router
from app.jobs.events import router as events_router
from app.jobs.logs import router as logs_router
from app.jobs.router import router as jobs_router
from app.metrics.http import RequestMetricsMiddleware
from app.metrics.router import router as metrics_router
from app.resources.router import router as resources_router
from app.tenant.router import router as tenant_router
from app.ui.router import router as ui_router
from app.uploads.router import router as uploads_router
from compression import __version__
from core.config import get_settings
from core.db.migrate import ensure_schema
from core.db.session import get_engine
from core.queue import broker_reachable


@asynccontextmanager
async def lifespan(_app: FastAPI):
    settings = get_settings()
    ensure_schema(get_engine(), settings.resolved_database_url, settings.should_auto_migrate)
    yield


def create_app() -> FastAPI:
    app = FastAPI(title="modelpress", version=__version__, lifespan=lifespan,
                  description="Compression as a service for PyTorch models. Upload a `.pt2` model and an `.npz` "
                              "dataset, submit a job, poll it, download the compressed model. Every endpoint but "
                              "the health checks needs `Authorization: Bearer <API key>` (or `X-API-Key`). "
                              "POSTs that create something accept an `Idempotency-Key`. " + (_app_doc or ""))
    install_error_handlers(app)
    install_openapi(app)
    install_overload_guard(app)
    app.add_middleware(RequestMetricsMiddleware)
    # Added last = outermost: a NUL byte or an oversized body is refused before anything else (the overload
    # queue included) reads the request.
    app.add_middleware(BodyLimitMiddleware, limit_for=request_body_limit)
    app.add_middleware(RejectNulMiddleware)
    app.include_router(resources_router)
    app.include_router(jobs_router)
    app.include_router(logs_router)
    app.include_router(events_router)
    app.include_router(downloads_router)
    app.include_router(ui_router)
    app.include_router(metrics_router)
    app.include_router(uploads_router)
    app.include_router(tenant_router)

    @app.get("/healthz", tags=["health"], responses=responses(InternalError))
    def healthz() -> dict:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={**responses(InternalError),
                                                    503: {"description": "database or broker unreachable"}})
    def readyz() -> JSONResponse:
        """The database and the broker are reachable."""
        checks = {"database": _database_reachable(), "broker": broker_reachable()}
        ready = all(checks.values())
        return JSONResponse({"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503)

    return app


def _database_reachable() -> bool:
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means "not ready"
        return False


app = create_app()
