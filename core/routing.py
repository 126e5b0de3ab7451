"""Which queue a job goes to, how much memory it is expected to need, and why it may have to wait.

- A job asks for a device kind in its spec (`resources.device`): `cpu` and `gpu` go to that queue. `any` (the
  default) prefers `gpu` for a job with a training stage (QAT, distillation, iPQ, pruning with finetuning: the
  work a GPU speeds up) and `cpu` for a job without one (PTQ: calibration is cheap, and its int8 deployable is
  lowered and timed for x86 CPUs); it goes to the preferred queue if a live worker there can fit it, else to the
  other if one there can, else to the preferred one, where it waits.
- Memory: `resources.memory_bytes` if the job gives it, else a rough estimate from the model and dataset sizes
  (see `estimate_memory_bytes`). A worker whose memory is smaller does not start the job.
- A job no worker could ever run is refused (422) only where that is knowable: the operator declares the
  registered fleet complete (`worker_fleet_fixed`) and none of its workers consumes the queue with enough
  memory. Otherwise the job is queued with a `waiting_reason` its owner can read.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.config import Settings
from core.jobs.spec import JobCreate
from core.queue import CPU_QUEUE, GPU_QUEUE
from core.workers import WorkerInfo

GIB = 1024**3
# A job's process before its model: the Python interpreter, torch and the library (about 0.5 GiB measured on
# CPU with `ps` while a job ran) plus headroom for the evaluation's batches.
BASE_JOB_BYTES = 1 * GIB
# Copies of the weights a stage holds at once. Training: fp32 weights, gradients, two optimizer moments and a
# teacher. Without training: the original, the quantized copy and the compiled one.
TRAINING_WEIGHT_COPIES = 6
INFERENCE_WEIGHT_COPIES = 3
TRAINING_FREE_METHODS = frozenset({"ptq"})


class NoWorkerCanRun(ValueError):
    """No worker of the (declared complete) fleet could ever run this job."""


@dataclass(frozen=True)
class Route:
    queue: str
    memory_bytes: int
    waiting_reason: str | None  # None: some live worker consumes the queue and fits the job
    send_now: bool  # False: live workers consume the queue but none fits; the reaper sends it when one does


def trains(spec: JobCreate) -> bool:
    return any(stage.method not in TRAINING_FREE_METHODS for stage in spec.stages)


def estimate_memory_bytes(spec: JobCreate, model_bytes: int, dataset_bytes: int) -> int:
    if spec.resources.memory_bytes is not None:
        return spec.resources.memory_bytes
    copies = TRAINING_WEIGHT_COPIES if trains(spec) else INFERENCE_WEIGHT_COPIES
    return BASE_JOB_BYTES + copies * model_bytes + dataset_bytes


def _consumers(workers: list[WorkerInfo], queue: str) -> list[WorkerInfo]:
    return [worker for worker in workers if queue in worker.queues]


def _gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def route(spec: JobCreate, model_bytes: int, dataset_bytes: int, known: list[WorkerInfo],
          settings: Settings) -> Route:
    memory = estimate_memory_bytes(spec, model_bytes, dataset_bytes)
    live = [worker for worker in known if worker.heartbeat_age_s <= settings.worker_stale_after_s]
    device = spec.resources.device
    if device == "any":
        candidates = [GPU_QUEUE, CPU_QUEUE] if trains(spec) else [CPU_QUEUE, GPU_QUEUE]
    else:
        candidates = [GPU_QUEUE if device == "gpu" else CPU_QUEUE]
    for queue in candidates:
        if any(worker.fits(memory) for worker in _consumers(live, queue)):
            return Route(queue, memory, None, True)
    if settings.worker_fleet_fixed and known and not any(
            worker.fits(memory) for queue in candidates for worker in _consumers(known, queue)):
        raise NoWorkerCanRun(
            f"no worker of this service can run this job: it needs about {_gib(memory)} on queue "
            f"{' or '.join(candidates)}, and the registered workers are "
            + ", ".join(f"{w.name} ({'/'.join(w.queues)}, {_gib(w.memory_bytes)})" for w in known)
            + "; lower resources.memory_bytes, or choose another resources.device")
    # With no worker registered yet (a service just started, or a fleet scaled to zero) a job the device leaves
    # open goes to `cpu`, the queue every worker consumes by default (a GPU worker takes gpu,cpu): sent to `gpu`
    # it would wait forever on a CPU-only deployment.
    fallback = CPU_QUEUE if CPU_QUEUE in candidates else candidates[0]
    queue = next((q for q in candidates if _consumers(known, q)), fallback)
    consumers = _consumers(live, queue)
    if not consumers:
        return Route(queue, memory, f"no live worker consumes queue {queue!r}; the job starts when one does", True)
    largest = max(worker.memory_bytes for worker in consumers)
    return Route(queue, memory, f"needs about {_gib(memory)} and the largest live worker on queue {queue!r} "
                                f"has {_gib(largest)}; the job starts when a worker with enough memory is live", False)
