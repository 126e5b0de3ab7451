import pytest

from compression.context import Cancelled, RunContext


def test_stages_keep_separate_checkpoints_and_label_their_progress():
    store, events = {}, []
    ctx = RunContext(report=events.append, save_checkpoint=store.__setitem__, load_checkpoint=store.get)
    first, second = ctx.for_stage("0:qat"), ctx.for_stage("1:kd")
    first.save_checkpoint("train", b"qat state")
    assert second.load_checkpoint("train") is None
    assert first.load_checkpoint("train") == b"qat state" and set(store) == {"0:qat/train"}
    second.progress("train", 5, 10, loss=0.5)
    assert (events[0].stage, events[0].fraction, events[0].metrics["loss"]) == ("1:kd", 0.5, 0.5)


def test_progress_stops_with_the_reason_the_runner_gives():
    ctx = RunContext(should_stop=lambda: "time_limit_exceeded").for_stage("0:ptq")
    with pytest.raises(Cancelled) as stopped:
        ctx.progress("calibrate", 1, 4)
    assert stopped.value.reason == "time_limit_exceeded"


class FakeClock:
    """Stands in for time.monotonic inside compression.context, so a test can let minutes pass at once."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    import compression.context
    fake = FakeClock()
    monkeypatch.setattr(compression.context, "monotonic", fake)
    return fake


def test_the_estimate_is_the_phase_own_pace_not_the_time_since_the_stage_began(clock):
    events = []
    ctx = RunContext(report=events.append).for_stage("0:kd")
    ctx.progress("build student", 1, 1)
    clock.now += 600  # a slow earlier phase
    ctx.progress("train", 10, 100)  # resumed from a checkpoint at step 10: the clock starts here
    clock.now += 20
    ctx.progress("train", 20, 100)
    assert "eta_s" not in events[1].metrics
    assert events[2].metrics["eta_s"] == pytest.approx(160.0)  # 2 s a step, 80 steps left


def test_a_phase_that_cannot_end_within_the_time_limit_stops_with_its_estimate(clock):
    ctx = RunContext(deadline=clock.now + 3600).for_stage("0:kd")
    ctx.progress("train", 0, 1000)
    clock.now += 10
    ctx.progress("train", 5, 1000)  # 2 s a step would need 33 min: fine
    clock.now += 90
    with pytest.raises(ValueError) as stopped:
        ctx.progress("train", 10, 1000)  # 10 s a step: 2 h 45 min more, with 58 min 20 s left
    message = str(stopped.value)
    assert "stage 0:kd cannot finish its train phase" in message
    assert "10 of 1000 steps in 1 min 40 s" in message and "about 2 h 45 min more" in message
    assert "leaves 58 min 20 s" in message and "time_limit_s" in message


def test_pace_is_judged_only_after_enough_evidence_and_only_with_a_deadline(clock):
    limited, unlimited = RunContext(deadline=clock.now + 60), RunContext()
    for ctx in (limited, unlimited):
        ctx.progress("train", 0, 1000)
    clock.now += 20
    for ctx in (limited, unlimited):
        ctx.progress("train", 5, 1000)  # far too slow, but 20 s of a phase may be its warm-up: not judged yet
    clock.now += 20
    unlimited.progress("train", 10, 1000)
    with pytest.raises(ValueError, match="cannot finish"):
        limited.progress("train", 10, 1000)


def test_a_phase_close_to_its_limit_is_let_run(clock):
    ctx = RunContext(deadline=clock.now + 1000)
    ctx.progress("train", 0, 100)
    clock.now += 50
    ctx.progress("train", 5, 100)  # 950 s more, 950 s left
    clock.now += 50
    ctx.progress("train", 10, 100)  # 900 s more, 900 s left: on time
