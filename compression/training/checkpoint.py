"""Resumable training state as bytes: model, extra modules, optimizer (with schedule), loss scaler, step, RNG.

The bytes go through `RunContext.save_checkpoint`, so the runner decides where they live. They are written with
`torch.save` and read back with `weights_only=True`: a checkpoint is data, never code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import torch
from torch import nn

CHECKPOINT_NAME = "train"


@dataclass
class TrainingState:
    model: nn.Module
    extra_modules: dict[str, nn.Module]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None

    def to_bytes(self, step: int, loss_history: list[float]) -> bytes:
        payload = {
            "step": step,
            "loss_history": list(loss_history),
            "model": self.model.state_dict(),
            "extra_modules": {name: module.state_dict() for name, module in self.extra_modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    def restore(self, data: bytes) -> tuple[int, list[float]]:
        """Load `data` into the live objects; returns (step to continue from, recent losses)."""
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        self.model.load_state_dict(payload["model"])
        missing = set(self.extra_modules) ^ set(payload["extra_modules"])
        if missing:
            raise ValueError(f"checkpoint and run disagree on extra modules: {sorted(missing)}")
        for name, module in self.extra_modules.items():
            module.load_state_dict(payload["extra_modules"][name])
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scaler is not None and payload["scaler"] is not None:
            self.scaler.load_state_dict(payload["scaler"])
        torch.set_rng_state(payload["rng_cpu"])
        if payload["rng_cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["rng_cuda"])
        return int(payload["step"]), list(payload["loss_history"])
