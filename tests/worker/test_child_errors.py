"""What the child says about the exception that ended a job."""

import errno

from compression.context import Cancelled
from compression.errors import NonFiniteLoss
from worker.child_errors import describe

STAGES = [{"method": "qat", "training": {"batch_size": 256, "steps": 10}},
          {"method": "ptq", "calibration_samples": 4096, "calibration_split": "train"}]
EVALUATION = {"max_samples": None, "latency_batch_sizes": [1, 32]}


def _describe(exc, stage="0:qat", phase="train", **kwargs):
    return describe(exc, {"stage": stage, "phase": phase}, STAGES, EVALUATION, **kwargs)


def test_running_out_of_memory_names_the_sizes_of_the_stage_that_ran():
    error = _describe(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"))
    assert error == {"code": "out_of_memory", "gpu": False, "sizes": True,
                     "message": "ran out of memory in stage 0:qat (train) with stages.0.training.batch_size=256; "
                                "lower these"}
    calibrating = _describe(MemoryError(), stage="1:ptq", phase="calibrate")
    assert "stages.1.calibration_samples=4096" in calibrating["message"]
    evaluating = _describe(MemoryError(), stage="1:ptq", phase="evaluate")
    assert "evaluation.max_samples=None, evaluation.latency_batch_sizes=[1, 32]" in evaluating["message"]
    assert _describe(ImportError("libtorch_cpu.so: failed to map segment from shared object"), stage="main",
                     phase="start")["message"] == "ran out of memory in the job's start phase"


def test_limits_stops_user_errors_and_crashes_get_their_codes():
    too_big = OSError(errno.EFBIG, "File too large")
    assert _describe(RuntimeError("write failed"), file_limit_hit=True)["limit"] == "file_bytes"
    wrapped = RuntimeError("could not save")
    wrapped.__cause__ = too_big
    assert _describe(wrapped)["code"] == "resource_limit"
    assert _describe(OSError(errno.EMFILE, "Too many open files"))["limit"] == "open_files"
    assert _describe(Cancelled("time_limit_exceeded"))["code"] == "time_limit_exceeded"
    diverged = _describe(NonFiniteLoss(float("nan"), 12, 0.3))
    assert {k: diverged[k] for k in ("code", "message")} == {"code": "invalid_input",
                                                            "message": str(NonFiniteLoss(float("nan"), 12, 0.3))}
    assert "NonFiniteLoss" in diverged["traceback"]  # for the job's log
    assert "step 12" in diverged["message"] and "learning rate 0.3" in diverged["message"]
    try:
        raise KeyError("boom")
    except KeyError as exc:
        crash = _describe(exc)
    assert crash["code"] == "internal_error" and "KeyError: 'boom' in stage 0:qat (train)" in crash["message"]
    assert "Traceback (most recent call last)" in crash["message"]
