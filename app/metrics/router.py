"""GET /metrics in Prometheus's text format. Open by default (it carries only service-wide counts, nothing of a
tenant); set MODELPRESS_METRICS_TOKEN to require `Authorization: Bearer <token>` from the scraper."""

from __future__ import annotations

import hmac
import os

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from app.core.errors import InternalError, Unauthorized, responses
from app.metrics.collector import JobCollector
from core.config import get_settings

router = APIRouter(tags=["operations"])


@router.get("/metrics", responses=responses(Unauthorized, InternalError),
            response_class=Response, openapi_extra={"security": []})
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests, latencies, jobs by status, queue depth, job durations, worker heartbeats."""
    token = get_settings().metrics_token
    if token and not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {token}"):
        raise Unauthorized("this endpoint needs Authorization: Bearer <MODELPRESS_METRICS_TOKEN>")
    traffic = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        traffic = CollectorRegistry()
        multiprocess.MultiProcessCollector(traffic)
    jobs = CollectorRegistry()
    jobs.register(JobCollector())
    return Response(generate_latest(traffic) + generate_latest(jobs), media_type=CONTENT_TYPE_LATEST)
