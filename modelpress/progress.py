"""A one-line progress display of a job: overall progress across its stages, the stage and phase, the step, and
an estimate of the time left."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import TextIO

BAR_WIDTH = 24


def overall(job: dict) -> float:
    progress = job.get("progress") or {}
    if job.get("status") == "succeeded":
        return 1.0
    return float(progress.get("overall", progress.get("fraction")) or 0.0)


def eta_seconds(job: dict, now: float | None = None) -> float | None:
    """Time left, from the time the job has run and its overall progress (None until there is enough of both)."""
    done, started = overall(job), job.get("started_at")
    if job.get("status") != "running" or not started or done < 0.02:
        return None
    elapsed = (now or time.time()) - datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
    return max(0.0, elapsed * (1 - done) / done)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def describe(job: dict) -> str:
    """`[#######-----]  31%  running  stage 0:qat train 120/400  ETA 1m05s`"""
    done, progress = overall(job), job.get("progress") or {}
    filled = int(done * BAR_WIDTH)
    parts = [f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done * 100:3.0f}%", f"{job.get('status', ''):9}"]
    stage = progress.get("stage")
    if stage:
        parts.append("baseline" if stage == "main" else f"stage {stage}")
    if progress.get("phase"):
        parts.append(str(progress["phase"]))
    if progress.get("total", 0) > 1:
        parts.append(f"{progress.get('step', 0)}/{progress['total']}")
    eta = eta_seconds(job)
    if eta is not None:
        parts.append(f"ETA {duration(eta)}")
    return "  ".join(parts)


class ProgressLine:
    """Shows `describe(job)` on `stream`: redrawn in place on a terminal; elsewhere (a log file, CI) a new line
    only when the stage, phase or status changes, or every 10 %."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_key, self.last_width = None, 0

    def show(self, job: dict) -> None:
        text = describe(job)
        if self.tty:
            self.stream.write("\r" + text.ljust(self.last_width))
            self.last_width = len(text)
        else:
            progress = job.get("progress") or {}
            key = (job.get("status"), progress.get("stage"), progress.get("phase"), int(overall(job) * 10))
            if key == self.last_key:
                return
            self.last_key = key
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.last_width:
            self.stream.write("\n")
            self.stream.flush()
