"""How a long-running method talks to whoever runs it: progress out, cancellation and checkpoints in."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from time import monotonic
from typing import Callable

# A phase's pace is judged only after this many seconds and steps: its first seconds include one-off costs
# (compiling, warming caches) that would make a long phase look longer than it is.
PACE_EVIDENCE_S, PACE_EVIDENCE_STEPS = 30.0, 3
# A phase is stopped as unable to finish only when its estimate exceeds the time left by more than this factor:
# a loaded machine's pace varies by a few tens of percent, and a job near its limit may still make it.
PACE_TOLERANCE = 1.1


class WillNotFinish(ValueError):
    """A phase's own pace says the job cannot end within its time limit: stopped now, with the estimate, rather than
    when the limit passes hours later (a ValueError: what the user sets, steps, samples or the limit, is the fix)."""


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
class PhaseClock:
    """The pace of the phase being reported: timed from the phase's first report, so that its estimate is neither
    charged for earlier phases nor flattered by steps done before a resume from a checkpoint."""

    phase: str | None = None
    total: int = 0
    first_step: int = 0
    started: float = 0.0

    def seconds_left(self, phase: str, step: int, total: int) -> float | None:
        now = monotonic()
        if (phase, total) != (self.phase, self.total) or step < self.first_step:
            self.phase, self.total, self.first_step, self.started = phase, total, step, now
            return None
        done = step - self.first_step
        return (now - self.started) / done * (total - step) if done > 0 else None

    def has_evidence(self, step: int, seconds: float = PACE_EVIDENCE_S) -> bool:
        return monotonic() - self.started >= seconds and step - self.first_step >= PACE_EVIDENCE_STEPS


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


@dataclass
class RunContext:
    """Callbacks a method receives. Every field has a harmless default so notebooks need not pass any.

    `should_stop` returns a reason string when the method must stop, or None. `save_checkpoint(name, data)` and
    `load_checkpoint(name)` let training resume after a crash; the runner decides where the bytes live.
    `deadline` (a `time.monotonic()` value) is when the runner will stop the job, its time limit: a phase whose pace
    shows it cannot end before then stops at once with `WillNotFinish`, judged after `pace_evidence_s` seconds.
    """

    report: Callable[[ProgressEvent], None] = lambda event: None
    should_stop: Callable[[], str | None] = _never
    save_checkpoint: Callable[[str, bytes], None] = lambda name, data: None
    load_checkpoint: Callable[[str], bytes | None] = lambda name: None
    stage: str = "main"
    device: str = "cpu"
    seed: int = 0
    deadline: float | None = None
    pace_evidence_s: float = PACE_EVIDENCE_S
    _clock: PhaseClock = field(default_factory=PhaseClock, init=False, repr=False)

    def progress(self, phase: str, step: int, total: int, **metrics) -> None:
        """Report progress (with `eta_s`, the phase's seconds left at its pace so far), then stop with `Cancelled`
        if the runner asked for it, or with `WillNotFinish` if the phase cannot end before the deadline."""
        seconds_left = self._clock.seconds_left(phase, step, total)
        if seconds_left is not None:
            metrics.setdefault("eta_s", round(seconds_left, 1))
        self.report(ProgressEvent(self.stage, phase, step, total, metrics))
        self.check()
        if seconds_left is not None:
            self._check_pace(phase, step, total, seconds_left)

    def _check_pace(self, phase: str, step: int, total: int, seconds_left: float) -> None:
        if self.deadline is None or not self._clock.has_evidence(step, self.pace_evidence_s):
            return
        time_left = self.deadline - monotonic()
        if seconds_left > PACE_TOLERANCE * max(time_left, 0.0):
            where = "the baseline" if self.stage == "main" else f"stage {self.stage}"
            done, spent = step - self._clock.first_step, monotonic() - self._clock.started
            raise WillNotFinish(
                f"{where} cannot finish its {phase} phase within the job's time limit: at its pace so far ({done} "
                f"of {total} steps in {duration(spent)}) it needs about {duration(seconds_left)} more, and the "
                f"time limit leaves {duration(max(time_left, 0.0))}; lower this stage's steps, samples or batch "
                "size, or submit the job with a longer time_limit_s")

    def check(self) -> None:
        reason = self.should_stop()
        if reason:
            raise Cancelled(reason)

    def for_stage(self, stage: str) -> "RunContext":
        """The context of one pipeline stage: its progress is labelled with `stage`, and its checkpoints live under
        `stage/` so two training stages of one job never resume from each other's state."""
        return replace(self, save_checkpoint=lambda name, data: self.save_checkpoint(f"{stage}/{name}", data),
                       load_checkpoint=lambda name: self.load_checkpoint(f"{stage}/{name}"), stage=stage)
