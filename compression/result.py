from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Artifact:
    """A file a method wrote for the user to download. Its size is the size of the file, never an estimate."""

    name: str  # file name offered to the user, e.g. "model_int8.pt2"
    path: Path
    kind: str  # "model.pt2", "model.onnx", "packed.safetensors", "report.json", ...
    metadata: dict = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size


@dataclass
class StageResult:
    model: torch.nn.Module  # runnable; it is what the next stage starts from
    artifacts: list[Artifact] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    # Other deployables among the artifacts, loaded: {artifact name: module running that file}; the pipeline
    # times each next to the stage's model (as it is: a runtime, not torch.compile).
    runtimes: dict[str, torch.nn.Module] = field(default_factory=dict)
