"""Baselines reused across jobs: the uploaded model's quality, size and parameter count on a dataset are measured
by the first job on those inputs and read back by the tenant's later ones (the library skips that evaluation:
`compression.pipeline.run_pipeline(known_baseline=...)`).

Latency is never reused: each stage times the upload in alternation with its own model, under the same load.
A baseline stays with its tenant; its key changes with the model's or the dataset's bytes (their sha256), the
evaluation settings and the versions of the library and torch, so any change measures it afresh.
"""

from __future__ import annotations

import hashlib
import json

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.models import Baseline

# Every part of a baseline depends only on the key's inputs except its timings, which depend on the machine's load.
TIMING_PREFIXES = ("latency", "reference_latency", "speedup", "reused")


def baseline_key(model_sha256: str, dataset_sha256: str, evaluation: dict, versions: dict) -> str:
    inputs = {"model": model_sha256, "dataset": dataset_sha256, "evaluation": evaluation, "versions": versions}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def find_baseline(session: Session, tenant_id: str, key: str) -> dict | None:
    row = session.get(Baseline, (tenant_id, key))
    return dict(row.metrics) if row is not None else None


def save_baseline(session: Session, tenant_id: str, key: str, model_sha256: str, dataset_sha256: str,
                  metrics: dict) -> bool:
    """Keep the reusable part of a job's baseline; False when another job stored it first (that one stays)."""
    reusable = {name: value for name, value in metrics.items() if not name.startswith(TIMING_PREFIXES)}
    if not {"size_bytes", "metric", "metric_points"} <= set(reusable):
        return False
    try:
        with session.begin_nested():
            session.add(Baseline(tenant_id=tenant_id, key=key, model_sha256=model_sha256,
                                 dataset_sha256=dataset_sha256, metrics=reusable))
    except IntegrityError:
        return False
    return True
