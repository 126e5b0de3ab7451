"""Routing a job to a queue: the device it asks for, its methods, its memory against the workers' (no database)."""

import pytest

GIB = 1024**3


def _spec(method: str = "ptq", **resources):
    from core.jobs.spec import JobCreate
    return JobCreate.model_validate({"model_id": "mdl_1", "dataset_id": "ds_1", "stages": [{"method": method}],
                                     "resources": resources})


def _worker(name: str, queues: tuple[str, ...], memory_gib: float, age_s: float = 1.0):
    from core.workers import WorkerInfo
    return WorkerInfo(name, "gpu" if "gpu" in queues else "cpu", int(memory_gib * GIB), queues, 1, age_s)


@pytest.fixture
def settings():
    from core.config import Settings
    return Settings(worker_stale_after_s=30)


def test_memory_is_the_request_or_an_estimate_that_grows_with_training():
    from core.routing import BASE_JOB_BYTES, estimate_memory_bytes
    assert estimate_memory_bytes(_spec(memory_bytes=123), 10 * GIB, GIB) == 123
    ptq, qat = estimate_memory_bytes(_spec("ptq"), GIB, GIB), estimate_memory_bytes(_spec("qat"), GIB, GIB)
    assert BASE_JOB_BYTES + 2 * GIB <= ptq < qat


def test_any_device_prefers_gpu_for_training_and_cpu_otherwise_where_a_worker_is_live(settings):
    from core.routing import route
    both = [_worker("c", ("cpu",), 16), _worker("g", ("gpu",), 80)]
    assert route(_spec("qat"), GIB, GIB, both, settings).queue == "gpu"
    assert route(_spec("ptq"), GIB, GIB, both, settings).queue == "cpu"
    only_cpu = [_worker("c", ("cpu",), 16)]
    training_on_cpu = route(_spec("qat"), GIB, GIB, only_cpu, settings)
    assert (training_on_cpu.queue, training_on_cpu.waiting_reason, training_on_cpu.send_now) == ("cpu", None, True)
    stale_gpu = [_worker("c", ("cpu",), 16), _worker("g", ("gpu",), 80, age_s=300)]
    assert route(_spec("qat"), GIB, GIB, stale_gpu, settings).queue == "cpu"


def test_an_explicit_device_waits_with_a_reason_when_no_live_worker_serves_it(settings):
    from core.routing import route
    chosen = route(_spec(device="gpu"), GIB, GIB, [_worker("c", ("cpu",), 16)], settings)
    assert chosen.queue == "gpu" and chosen.send_now
    assert "no live worker consumes queue 'gpu'" in chosen.waiting_reason


def test_a_job_too_large_for_every_live_worker_is_held_back_with_the_sizes(settings):
    from core.routing import route
    chosen = route(_spec(device="gpu", memory_bytes=100 * GIB), GIB, GIB, [_worker("g", ("gpu", "cpu"), 40)],
                   settings)
    assert (chosen.queue, chosen.send_now) == ("gpu", False)
    assert "100.0 GiB" in chosen.waiting_reason and "40.0 GiB" in chosen.waiting_reason
    fits = route(_spec(device="gpu", memory_bytes=100 * GIB), GIB, GIB,
                 [_worker("g", ("gpu",), 40), _worker("big", ("gpu",), 141)], settings)
    assert (fits.send_now, fits.waiting_reason) == (True, None)


def test_refused_only_when_the_fleet_is_declared_complete_and_known(settings):
    from core.routing import NoWorkerCanRun, route
    small = [_worker("g", ("gpu",), 40, age_s=600)]  # known, even if not live right now
    huge = _spec(device="gpu", memory_bytes=100 * GIB)
    assert route(huge, GIB, GIB, small, settings).waiting_reason  # autoscaling may add one: it waits
    fixed = settings.model_copy(update={"worker_fleet_fixed": True})
    with pytest.raises(NoWorkerCanRun, match="lower resources.memory_bytes"):
        route(huge, GIB, GIB, small, fixed)
    assert route(huge, GIB, GIB, [], fixed).waiting_reason  # no worker ever registered: not knowable


def test_before_any_worker_registers_an_open_device_goes_to_the_queue_every_worker_consumes(settings):
    """A training job submitted the moment a CPU-only service starts must not wait forever on the gpu queue."""
    from core.routing import route
    early = route(_spec("qat"), GIB, GIB, [], settings)
    assert early.queue == "cpu" and early.send_now and "no live worker" in early.waiting_reason
    assert route(_spec("qat", device="gpu"), GIB, GIB, [], settings).queue == "gpu"
