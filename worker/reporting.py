"""Progress, heartbeat and stop checks for a running job, each writing or reading the job row sparingly."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from compression.context import ProgressEvent
from core.jobs.state import beat, cancel_requested, write_progress

log = logging.getLogger(__name__)
# Where each phase lies within its part of a job (a rough share of the time, so the ETA means something):
# loading, the dry run of every stage and the baseline's measurement; a method's short set-up phases, its
# training, its export; then the pipeline's evaluation and latency measurement of the stage (and a folder job's
# Hugging Face folder). A phase not named here spans the method's share.
_SETUP = ("prepare", "calibrate", "teacher_targets", "synflow", "prune", "recalibrate", "quantize", "sensitivity",
          "diagnose", "budget")
PHASE_SPANS = {"load": (0.0, 0.3), "dry_run": (0.3, 0.4), **{name: (0.0, 0.15) for name in _SETUP},
               "train": (0.15, 0.6), "pack": (0.6, 0.7), "export": (0.6, 0.7), "evaluate": (0.7, 0.8),
               "latency": (0.8, 1.0), "hf_folder": (0.8, 1.0)}
METHOD_SPAN = (0.0, 0.7)


class ProgressWriter:
    """Writes progress to the job row at most every `interval` seconds, and at once when the stage or phase
    changes, so a fast loop cannot flood the database.

    Each write carries `overall`, the job's progress across all its stages: the baseline measurement (stage
    "main") and each of the `stage_count` stages count as equal parts. Within a part, the pipeline's measuring
    phases come last (`PHASE_SPANS`) and the method's own phases (calibrate, train, ...) fill the span before
    them; the current phase's fraction moves through its span. It never goes back (a method whose second phase
    starts at 0 stays where the first one ended). `on_phase(event)` hears each new stage or phase (the job's
    log)."""

    def __init__(self, job_id: str, interval: float, stage_count: int = 1,
                 on_phase: Callable[[ProgressEvent], None] | None = None):
        self.job_id, self.interval, self.parts = job_id, interval, stage_count + 1
        self.on_phase = on_phase
        self._last_write, self._last_key, self.overall = 0.0, None, 0.0

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        key = (event.stage, event.phase)
        start, end = PHASE_SPANS.get(event.phase, METHOD_SPAN)
        within = start + (end - start) * event.fraction
        self.overall = max(self.overall, min(1.0, (_part(event.stage) + within) / self.parts))
        if key == self._last_key and now - self._last_write < self.interval and event.step < event.total:
            return
        if key != self._last_key and self.on_phase:
            self.on_phase(event)
        self._last_write, self._last_key = now, key
        progress = {"stage": event.stage, "phase": event.phase, "step": event.step, "total": event.total,
                    "fraction": round(event.fraction, 4), "overall": round(self.overall, 4),
                    "metrics": _json_safe(event.metrics)}
        write_progress(self.job_id, progress)


def _part(stage: str) -> int:
    """0 for the baseline ("main"), i + 1 for pipeline stage "i:method"."""
    index, _, _ = stage.partition(":")
    return int(index) + 1 if index.isdigit() else 0


def _json_safe(metrics: dict) -> dict:
    return {k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (int, bool)) else v)
            for k, v in metrics.items()}


class StopCheck:
    """Tells the library to stop when the user cancelled (read from the row at most every `interval` seconds)
    or when the job's time limit has passed."""

    def __init__(self, job_id: str, deadline: float, interval: float = 0.5):
        self.job_id, self.deadline, self.interval = job_id, deadline, interval
        self._last_read, self._cancelled = 0.0, False

    def __call__(self) -> str | None:
        now = time.monotonic()
        if now > self.deadline:
            return "time_limit_exceeded"
        if not self._cancelled and now - self._last_read >= self.interval:
            self._last_read = now
            self._cancelled = cancel_requested(self.job_id)
        return "cancelled" if self._cancelled else None


class Heartbeat:
    """Background thread that keeps the job's heartbeat fresh, even through long steps such as torch.compile."""

    def __init__(self, job_id: str, worker: str, interval: float):
        self.job_id, self.worker, self.interval = job_id, worker, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                beat(self.job_id, self.worker)
            except Exception:  # e.g. the database briefly locked or away: the next beat may get through
                log.exception("heartbeat of job %s failed", self.job_id)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
