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

# The parts of a baseline that depend only on the key's inputs (not on the machine's load).
REUSED = ("accuracy", "samples", "top1_agreement", "cosine", "mse", "sqnr_db", "size_bytes", "parameters")


def baseline_key(model_sha256: str, dataset_sha256: str, evaluation: dict, versions: dict) -> str:
    inputs = {"model": model_sha256, "dataset": dataset_sha256, "evaluation": evaluation, "versions": versions}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def find_baseline(session: Session, tenant_id: str, key: str) -> dict | None:
    row = session.get(Baseline, (tenant_id, key))
    return dict(row.metrics) if row is not None else None


def save_baseline(session: Session, tenant_id: str, key: str, model_sha256: str, dataset_sha256: str,
                  metrics: dict) -> bool:
    """Keep the reusable part of a job's baseline; False when another job stored it first (that one stays)."""
    reusable = {name: metrics[name] for name in REUSED if name in metrics}
    if "size_bytes" not in reusable or not ({"accuracy", "top1_agreement"} & set(reusable)):
        return False
    try:
        with session.begin_nested():
            session.add(Baseline(tenant_id=tenant_id, key=key, model_sha256=model_sha256,
                                 dataset_sha256=dataset_sha256, metrics=reusable))
    except IntegrityError:
        return False
    return True
