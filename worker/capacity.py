"""What this worker advertises in the registry (core/workers.py): its device kind, memory and queues.

The GPU is queried in a separate short-lived process: initialising CUDA in the worker's main process would break
the pool processes it forks later (CUDA cannot be re-initialised in a forked child).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from core.config import Settings
from core.queue import CPU_QUEUE, GPU_QUEUE

log = logging.getLogger(__name__)
_GPU_MEMORY = ("import torch; print(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory "
               "if torch.cuda.is_available() else 0)")


@dataclass(frozen=True)
class Capacity:
    device: str  # "cpu" or "gpu"
    memory_bytes: int

    @property
    def default_queues(self) -> list[str]:
        """A GPU worker also takes CPU jobs, so one GPU machine runs every job out of the box; a fleet with CPU
        workers of its own starts its GPU workers with `--queues gpu`."""
        return [GPU_QUEUE, CPU_QUEUE] if self.device == "gpu" else [CPU_QUEUE]


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def gpu_memory_bytes(sure: bool = False) -> int:
    """Memory of the first visible GPU (CUDA_VISIBLE_DEVICES picks it), 0 when there is none. Unless `sure`
    (the device is set to cuda), a machine without an NVIDIA driver is not probed: starting torch takes seconds."""
    if not sure and shutil.which("nvidia-smi") is None and not os.path.exists("/dev/nvidiactl"):
        return 0
    try:
        found = subprocess.run([sys.executable, "-c", _GPU_MEMORY], capture_output=True, text=True, timeout=120,
                               check=True)
        return int(found.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return 0


def detect_capacity(settings: Settings) -> Capacity:
    device = settings.device
    gpu_memory = 0 if device == "cpu" or settings.worker_memory_bytes else gpu_memory_bytes(device != "auto")
    kind = "gpu" if device.startswith("cuda") or (device == "auto" and gpu_memory) else "cpu"
    if settings.worker_memory_bytes:
        return Capacity(kind, settings.worker_memory_bytes)
    if kind == "gpu" and not gpu_memory:
        # Set to cuda, yet torch sees no GPU: its jobs will say so when they fail. The machine's memory is the
        # only figure left to advertise; MODELPRESS_WORKER_MEMORY_BYTES overrides it.
        log.warning("MODELPRESS_DEVICE is %s but no GPU memory could be read; advertising the machine's memory",
                    device)
        return Capacity(kind, machine_memory_bytes())
    return Capacity(kind, gpu_memory if kind == "gpu" else machine_memory_bytes())
