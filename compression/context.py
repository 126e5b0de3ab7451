"""How a long-running method talks to whoever runs it: progress out, cancellation and checkpoints in."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable


class Cancelled(Exception):
    """Raised inside a method when the runner asked it to stop (user cancel or time limit)."""

    def __init__(self, reason: str = "cancelled"):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ProgressEvent:
    stage: str
    phase: str
    step: int
    total: int
    metrics: dict = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0


def _never() -> str | None:
    return None


@dataclass
class RunContext:
    """Callbacks a method receives. Every field has a harmless default so notebooks need not pass any.

    `should_stop` returns a reason string when the method must stop, or None. `save_checkpoint(name, data)` and
    `load_checkpoint(name)` let training resume after a crash; the runner decides where the bytes live.
    """

    report: Callable[[ProgressEvent], None] = lambda event: None
    should_stop: Callable[[], str | None] = _never
    save_checkpoint: Callable[[str, bytes], None] = lambda name, data: None
    load_checkpoint: Callable[[str], bytes | None] = lambda name: None
    stage: str = "main"
    device: str = "cpu"
    seed: int = 0
    _started: float = field(default_factory=time.monotonic, repr=False)

    def progress(self, phase: str, step: int, total: int, **metrics) -> None:
        """Report progress, then stop with `Cancelled` if the runner asked for it."""
        if step and total:
            elapsed = time.monotonic() - self._started
            metrics.setdefault("eta_s", round(elapsed / step * (total - step), 1))
        self.report(ProgressEvent(self.stage, phase, step, total, metrics))
        self.check()

    def check(self) -> None:
        reason = self.should_stop()
        if reason:
            raise Cancelled(reason)

    def for_stage(self, stage: str) -> "RunContext":
        """The context of one pipeline stage: its progress is labelled with `stage`, and its checkpoints live under
        `stage/` so two training stages of one job never resume from each other's state."""
        return RunContext(self.report, self.should_stop,
                          lambda name, data: self.save_checkpoint(f"{stage}/{name}", data),
                          lambda name: self.load_checkpoint(f"{stage}/{name}"), stage, self.device, self.seed)
