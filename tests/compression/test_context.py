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
