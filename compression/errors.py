"""Errors for inputs the library cannot work with. Each is a ValueError whose message says what to change, so a
runner can report it as the user's to fix rather than as a crash."""

from __future__ import annotations

import math


class NonFiniteValues(ValueError):
    """NaN or Inf where numbers must be finite: the uploaded inputs, or activations seen during calibration."""


class NonFiniteLoss(NonFiniteValues):
    """Training diverged: the loss became NaN or Inf."""

    def __init__(self, loss: float, step: int, lr: float):
        self.loss, self.step, self.lr = loss, step, lr
        super().__init__(f"the training loss became {loss} at step {step} (learning rate {lr:.3g}); lower "
                         "training.lr, add training.warmup_steps or set training.grad_clip_norm")


def check_finite_range(lo: float, hi: float, where: str) -> None:
    """Refuse a calibrated range that is not finite: quantizing with it would produce a NaN model."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise NonFiniteValues(f"calibration saw non-finite activations at {where} (range [{lo}, {hi}]): the model "
                              "produces NaN or Inf on the calibration data; check the inputs' scale and the model")
